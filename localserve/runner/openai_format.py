"""OpenAI response shapes (chat, completions, their stream chunks, usage), built as plain dicts."""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from localserve.api.sse import sse_data
from localserve.runner.text import GenerationStats
from localserve.runner.tools import ToolCall

# Stands for the text in a text chunk's template: a string no model writes (NUL characters).
TEXT_MARK = "\u0000text\u0000"


def usage(stats: GenerationStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_tokens},
        # OpenAI's names for predicted-output tokens; ours are prompt-lookup drafts.
        "completion_tokens_details": {
            "accepted_prediction_tokens": stats.accepted_draft_tokens,
            "rejected_prediction_tokens": stats.rejected_draft_tokens,
            "reasoning_tokens": stats.reasoning_tokens,
        },
    }


def finish_reason(stats: GenerationStats, calls: Sequence[ToolCall] = ()) -> str:
    if calls:
        return "tool_calls"
    return "length" if stats.finish_reason == "length" else "stop"


@dataclass
class ResponseShape:
    """Fields shared by every chunk of one response."""

    model: str
    chat: bool
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        prefix = "chatcmpl-" if self.chat else "cmpl-"
        self.id = self.id or prefix + secrets.token_hex(12)
        self.created = self.created or int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }

    # -- streaming --------------------------------------------------------------------------
    def first_chunk(self) -> bytes | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        if not self.chat:
            return None
        return self.delta_chunk({"role": "assistant", "content": ""})

    def text_chunk(self, text: str) -> bytes:
        """What ``_text_chunk`` renders, byte for byte, from the template."""
        head, tail = self._text_template
        return head + json.dumps(text).encode("ascii") + tail

    @functools.cached_property
    def _text_template(self) -> tuple[bytes, bytes]:
        """A text chunk differs from the next only in its text: the rest is rendered once, at
        a stream's first piece, and per token only the text's JSON string (1 us against 12 us
        for the whole chunk, warm; the event loop runs this right after a decode has pushed
        its data out of the caches)."""
        head, tail = self._text_chunk(TEXT_MARK).split(json.dumps(TEXT_MARK).encode("ascii"))
        return head, tail

    def _text_chunk(self, text: str) -> bytes:
        return self.delta_chunk({"content": text}) if self.chat else self._completion_chunk(text)

    def delta_chunk(self, delta: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return sse_data(self._envelope("chat.completion.chunk", [choice]))

    def _completion_chunk(self, text: str, reason: str | None = None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return sse_data(self._envelope("text_completion", [choice]))

    def reasoning_chunk(self, text: str) -> bytes:
        """A piece of a thinking model's thought (llama-server's and DeepSeek's field)."""
        return self.delta_chunk({"reasoning_content": text})

    def tool_call_chunk(self, index: int, call: ToolCall) -> bytes:
        """A whole call in one delta (calls are read when generation ends)."""
        return self.delta_chunk({"tool_calls": [{"index": index, **call.openai()}]})

    def final_chunk(self, stats: GenerationStats, calls: Sequence[ToolCall] = ()) -> bytes:
        reason = finish_reason(stats, calls)
        return self.delta_chunk({}, reason) if self.chat else self._completion_chunk("", reason)

    def usage_chunk(self, stats: GenerationStats) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return sse_data({**self._envelope(obj, []), "usage": usage(stats)})

    # -- whole responses --------------------------------------------------------------------
    def whole(
        self,
        text: str,
        stats: GenerationStats,
        calls: Sequence[ToolCall] = (),
        reasoning: str = "",
    ) -> dict[str, Any]:
        reason = finish_reason(stats, calls)
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reasoning:
                message["reasoning_content"] = reasoning
            if calls:
                message["content"] = text or None
                message["tool_calls"] = [call.openai() for call in calls]
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reason,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
            obj = "text_completion"
        return {**self._envelope(obj, [choice]), "usage": usage(stats)}


def embeddings_response(model: str, vectors: list[list[float]], tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
