"""Anthropic's Messages API, translated: its requests (messages, content blocks, tools, tool
choice, extended thinking) into an OpenAI chat request, and OpenAI's answers back into a message
object or Anthropic's event stream (``message_start`` ... ``message_stop``). Pure: no HTTP, no
FastAPI (the routes are in ``server/routes/anthropic.py``).

Thinking follows Anthropic's default: off unless the request's ``thinking`` turns it on. Off, the
model is asked not to think (``enable_thinking: false``) and whatever thoughts a model writes
anyway are dropped; on, they come first, as a ``thinking`` block with its signature.

Images: ``image`` blocks in user turns become OpenAI image parts where they stand among the
text (a ``base64`` source as a data URL, a ``url`` source as its URL; Files API sources are
refused). Images in a ``tool_result`` are kept, as llama-server and Ollama keep them, but OpenAI
takes images in user messages only: the tool message keeps the result's text and the images
open the user message after the turn's tool results (``lift_tool_images``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from localserve.api.errors import APIError, api_error_from
from localserve.api.inference import InferenceCall
from localserve.api.requests import validate
from localserve.api.sse import sse_event
from localserve.errors import BackendUnavailableError
from localserve.protocols.openai import (
    call_arguments,
    image_part,
    lift_tool_images,
    message_content,
    openai_body,
    reasoning_of,
    text_part,
)

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class TextBlock(BaseModel):
    type: Literal["text"]
    text: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[dict[str, Any]] = ""
    is_error: bool = False


class AnthropicTool(BaseModel):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None


class ToolChoice(BaseModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class ThinkingBlock(BaseModel):
    type: Literal["thinking"]
    thinking: str
    signature: str = ""  # sent back as we gave it; we never check it


class ThinkingConfig(BaseModel):
    """The request's ``thinking``: ``enabled`` with a token budget, ``adaptive`` (the model
    decides how long), or ``disabled``. Anthropic's own limits (a budget of at least 1024 and
    below ``max_tokens``) are not enforced: a local model can think in fewer tokens."""

    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: int | None = Field(None, ge=1)
    display: Literal["summarized", "omitted"] | None = None

    @model_validator(mode="after")
    def _budget_when_enabled(self) -> ThinkingConfig:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError("thinking of type 'enabled' needs budget_tokens")
        return self

    @property
    def on(self) -> bool:
        return self.type != "disabled"


class AnthropicMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class CountTokensRequest(BaseModel):
    model: str
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None


# Blocks left out of a turn's text: Claude's encrypted reasoning (``redacted_thinking``: no model
# of ours can read it), and thinking blocks, which ``assistant_message`` reads apart.
SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")  # Anthropic's four


def content_parts(
    content: str | list[dict[str, Any]],
    where: str,
    images: bool = False,
    skipped: frozenset[str] = SKIPPED_BLOCKS,
) -> list[dict[str, Any]]:
    """Text blocks (and, where the turn may hold them, image blocks) as OpenAI content parts,
    in order; ``skipped`` blocks are read elsewhere. An image where none may be is refused,
    never dropped."""
    if isinstance(content, str):
        return [text_part(content)]
    parts = []
    for index, block in enumerate(content):
        kind = block.get("type")
        if isinstance(kind, str) and kind in skipped:  # a list or an object is no type
            continue
        if kind == "image":
            if not images:
                raise APIError(
                    400,
                    f"{where}: image blocks are accepted in user turns and tool results only.",
                    param=where,
                )
            parts.append(image_block(block, f"{where}.{index}"))
        elif kind == "text":
            parts.append(text_part(validate(TextBlock, block).text))
        else:
            raise APIError(
                400,
                f"{where}: content blocks of type '{kind}' are not supported; "
                "send text, image, tool_use and tool_result blocks.",
            )
    return parts


def text_of(content: str | list[dict[str, Any]], where: str) -> str:
    return "".join(part["text"] for part in content_parts(content, where))


def image_block(block: dict[str, Any], where: str) -> dict[str, Any]:
    """An ``image`` block as OpenAI's image part: a ``base64`` source becomes a data URL, a
    ``url`` source its URL (fetched later, within the gateway's limits)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if not isinstance(source, dict):
        raise APIError(400, f"{where}: an image block needs a source.", param=f"{where}.source")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or media_type not in IMAGE_MEDIA_TYPES:
            raise APIError(
                400,
                f"{where}.source.media_type must be one of {', '.join(IMAGE_MEDIA_TYPES)}.",
                param=f"{where}.source.media_type",
            )
        if not isinstance(data, str) or not data:
            raise APIError(
                400,
                f"{where}.source.data must be the image, base64-encoded.",
                param=f"{where}.source.data",
            )
        return image_part(f"data:{media_type};base64,{data}")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise APIError(400, f"{where}.source.url must be a URL.", param=f"{where}.source.url")
        return image_part(url)
    if kind == "file":
        raise APIError(
            400,
            f"{where}: images from Anthropic's Files API (source type 'file') are not "
            "supported; send the image as a base64 or url source.",
            param=f"{where}.source",
        )
    raise APIError(
        400, f"{where}.source.type must be 'base64' or 'url'.", param=f"{where}.source.type"
    )


def openai_tools(body: CountTokensRequest) -> dict[str, Any]:
    """Anthropic's ``tools`` and ``tool_choice`` as OpenAI request fields."""
    if not body.tools:
        return {}
    tools = []
    for index, raw in enumerate(body.tools):
        if raw.get("type") not in (None, "custom"):
            raise APIError(
                400,
                f"tools.{index}: Anthropic's server tools ('{raw.get('type')}') run only on "
                "Anthropic's platform; define a custom tool with name and input_schema.",
            )
        tool = validate(AnthropicTool, raw)
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    fields: dict[str, Any] = {"tools": tools}
    choice = body.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise APIError(400, "tool_choice of type 'tool' needs a name.")
            fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            fields["parallel_tool_calls"] = False
    return fields


def user_messages(content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn as OpenAI messages: a tool message per tool_result, then the
    turn's text and images. Images inside tool results move to the start of that user message
    (``lift_tool_images``: OpenAI takes images in user messages only)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    messages = []
    for index, block in enumerate(content):
        if block.get("type") != "tool_result":
            continue
        result = validate(ToolResultBlock, block)
        parts = content_parts(result.content, f"{where}.content.{index}.content", images=True)
        if result.is_error:
            parts = [text_part("Error: "), *parts]
        messages.append(
            {"role": "tool", "tool_call_id": result.tool_use_id, "content": message_content(parts)}
        )
    if len(messages) < len(content) or not messages:  # blocks besides the tool results
        skipped = SKIPPED_BLOCKS | {"tool_result"}
        parts = content_parts(content, f"{where}.content", images=True, skipped=skipped)
        messages.append({"role": "user", "content": message_content(parts)})
    return lift_tool_images(messages)


def assistant_message(content: str | list[dict[str, Any]], where: str) -> dict[str, Any]:
    """One Anthropic assistant turn (thinking, text and tool_use blocks) as an OpenAI message:
    its thoughts become ``reasoning_content``, for the model's template to keep or drop."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    uses = [validate(ToolUseBlock, b) for b in content if b.get("type") == "tool_use"]
    thoughts = [validate(ThinkingBlock, b).thinking for b in content if b.get("type") == "thinking"]
    text = text_of([b for b in content if b.get("type") != "tool_use"], where)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if any(thoughts):
        message["reasoning_content"] = "\n\n".join(thought for thought in thoughts if thought)
    if uses:
        message["tool_calls"] = [
            {
                "id": use.id,
                "type": "function",
                "function": {"name": use.name, "arguments": json.dumps(use.input)},
            }
            for use in uses
        ]
    return message


def openai_messages(body: CountTokensRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": text_of(body.system, "system")})
    for index, message in enumerate(body.messages):
        where = f"messages.{index}"
        if message.role == "assistant":
            messages.append(assistant_message(message.content, where))
        else:
            messages.extend(user_messages(message.content, where))
    return messages


def thinking_fields(thinking: ThinkingConfig | None) -> dict[str, Any]:
    """``thinking`` as OpenAI request fields: a budget when enabled, nothing when adaptive (the
    model thinks as long as it likes), ``enable_thinking: false`` when off or not asked for
    (localserve's own field, which cloud backends drop: a cloud model that does not reason
    would refuse a ``reasoning_effort``)."""
    if thinking is None or not thinking.on:
        return {"enable_thinking": False}
    if thinking.type == "enabled" and thinking.budget_tokens is not None:
        return {"thinking_budget_tokens": thinking.budget_tokens}
    return {}


def openai_request(body: MessagesRequest) -> dict[str, Any]:
    return openai_body(
        body.model,
        body.stream,
        messages=openai_messages(body),
        max_tokens=body.max_tokens,
        **openai_tools(body),
        **thinking_fields(body.thinking),
        stop=body.stop_sequences,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
    )


def messages_call(body: MessagesRequest) -> InferenceCall:
    return InferenceCall("/v1/chat/completions", openai_request(body), body.stream)


class AnthropicReply:
    """Anthropic's message object, or its event stream, from OpenAI's answer; ``thinking`` is
    the request's, which says whether the model's thoughts are shown."""

    media_type = "text/event-stream"

    def __init__(self, model: str, thinking: ThinkingConfig | None = None) -> None:
        self.model = model
        self.thinking = thinking

    def whole(self, reply: dict[str, Any]) -> dict[str, Any]:
        return message_object(self.model, reply, self.thinking)

    def stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        return message_events(self.model, chunks, self.thinking)


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_object(err: APIError) -> dict[str, Any]:
    """Anthropic's error body: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = ERROR_TYPES.get(err.status_code, "api_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def message_object(
    model: str, reply: dict[str, Any], thinking: ThinkingConfig | None = None
) -> dict[str, Any]:
    choice = reply["choices"][0]
    usage = reply.get("usage") or {}
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(choice["message"], thinking),
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


def signature(thought: str) -> str:
    """A thinking block's ``signature``. Anthropic's proves the thought is Claude's and unchanged;
    ours is only an opaque tag (base64 of the thought's SHA-256) so that clients which require
    one find one. We never verify signatures: a thought sent back is taken as it comes."""
    return base64.b64encode(hashlib.sha256(thought.encode("utf-8", "replace")).digest()).decode()


def shown_thought(thought: str, thinking: ThinkingConfig | None) -> str:
    """The text of the thinking block: the thought, or "" with ``display: "omitted"``."""
    return "" if thinking is not None and thinking.display == "omitted" else thought


def content_blocks(
    message: dict[str, Any], thinking: ThinkingConfig | None = None
) -> list[dict[str, Any]]:
    calls = message.get("tool_calls") or []
    text = message.get("content") or ""
    thought = reasoning_of(message)
    blocks: list[dict[str, Any]] = []
    if thought and thinking is not None and thinking.on:
        shown = shown_thought(thought, thinking)
        blocks.append({"type": "thinking", "thinking": shown, "signature": signature(thought)})
    if text or not calls:
        blocks.append({"type": "text", "text": text})
    for call in calls:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                "name": function.get("name", ""),
                "input": call_arguments(function.get("arguments", "")),
            }
        )
    return blocks


class ContentBlocks:
    """Anthropic's content block events from OpenAI deltas: thoughts go to a thinking block
    (``thinking_delta`` pieces, then its ``signature_delta`` just before it stops), text to a
    text block, each tool call to a tool_use block whose input arrives as ``input_json_delta``
    pieces. Thoughts are dropped unless the request's ``thinking`` is on."""

    def __init__(self, thinking: ThinkingConfig | None = None) -> None:
        self.index = -1
        self.open_kind: str | None = None
        self.open_call: int | None = None  # the OpenAI index of the open tool call
        self.thinking = thinking
        self.thought = ""  # the open thinking block's text so far, for its signature
        self.answered = False  # whether a text or tool_use block has started

    def delta(self, delta: dict[str, Any]) -> list[bytes]:
        """The events for one OpenAI delta (thoughts come before content in OpenAI's order)."""
        events: list[bytes] = []
        thought = reasoning_of(delta)
        if thought and self.thinking is not None and self.thinking.on:
            events += self.thought_piece(thought)
        if delta.get("content"):
            events += self.text(delta["content"])
        for call in delta.get("tool_calls") or []:
            events += self.tool_call(call)
        return events

    def _start(self, block: dict[str, Any]) -> list[bytes]:
        events = self.stop()
        self.index += 1
        self.open_kind = block["type"]
        self.answered = self.answered or block["type"] != "thinking"
        events.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        )
        if self.index == 0:
            events.append(sse_event("ping", {"type": "ping"}))
        return events

    def _delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": self.index, "delta": delta}
        return sse_event("content_block_delta", payload)

    def thought_piece(self, piece: str) -> list[bytes]:
        """A piece of the thought; the whole is kept for the block's signature."""
        events: list[bytes] = []
        if self.open_kind != "thinking":
            events = self._start({"type": "thinking", "thinking": ""})
            self.thought = ""
        self.thought += piece
        shown = shown_thought(piece, self.thinking)
        if shown:
            events.append(self._delta({"type": "thinking_delta", "thinking": shown}))
        return events

    def text(self, text: str) -> list[bytes]:
        events = [] if self.open_kind == "text" else self._start({"type": "text", "text": ""})
        return [*events, self._delta({"type": "text_delta", "text": text})]

    def tool_call(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        function = call.get("function") or {}
        if self.open_kind != "tool_use" or call.get("index", 0) != self.open_call:
            self.open_call = call.get("index", 0)
            block = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                "name": function.get("name", ""),
                "input": {},
            }
            events = self._start(block)
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(self._delta(delta))
        return events

    def stop(self) -> list[bytes]:
        if self.open_kind is None:
            return []
        events = []
        if self.open_kind == "thinking":
            events.append(
                self._delta({"type": "signature_delta", "signature": signature(self.thought)})
            )
        self.open_kind = None
        stop = {"type": "content_block_stop", "index": self.index}
        return [*events, sse_event("content_block_stop", stop)]


async def message_events(
    model: str, chunks: AsyncIterator[dict[str, Any]], thinking: ThinkingConfig | None = None
) -> AsyncIterator[bytes]:
    """Anthropic's event sequence, from OpenAI chunks."""
    start: dict[str, Any] = {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield sse_event("message_start", {"type": "message_start", "message": start})
    blocks = ContentBlocks(thinking)
    finish = "stop"
    usage: dict[str, Any] = {}
    try:
        async for chunk in chunks:
            for choice in chunk.get("choices") or []:
                for event in blocks.delta(choice.get("delta") or {}):
                    yield event
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
    except BackendUnavailableError as exc:
        yield sse_event("error", error_object(api_error_from(exc)))
        return
    if not blocks.answered:  # no text nor call was generated: still one (empty) text block
        for event in blocks.text(""):
            yield event
    for event in blocks.stop():
        yield event
    yield sse_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASONS.get(finish, "end_turn"), "stop_sequence": None},
            "usage": {
                "input_tokens": int(usage.get("prompt_tokens") or 0),
                "output_tokens": int(usage.get("completion_tokens") or 0),
            },
        },
    )
    yield sse_event("message_stop", {"type": "message_stop"})
