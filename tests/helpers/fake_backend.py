"""A backend that answers like a local runner without a model: known OpenAI-shaped answers.

``FakeBackend`` meets the router's ``Backend`` protocol. Every request is checked the way the
runner checks it (the same request models; a 400 in OpenAI's shape when they refuse it) and
answered from a fixed script: with ``reasoning`` on, a thinking model's ``REASONING`` first (as
``reasoning_content``, whatever the request's ``reasoning_effort``: some models think anyway),
then ``CONTENT`` in pieces, then, with ``tool_call`` on, ``TOOL_CALL`` with its arguments in
pieces, then the finish reason and ``USAGE`` (``REASONING_USAGE`` with reasoning). Streams are
the runner's SSE bytes; ``fail_after`` makes a stream die after that many events, as a crashed
runner's does.
Every request is recorded (path, payload), so tests can check what a protocol translated to.

``FakeCatalog`` and ``FakePulls`` are what Ollama's model-management routes need of the daemon
(``server/ports.py``): one installed model, ``tiny``, and a Hub that has nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from localserve.api.errors import APIError, error_body
from localserve.api.keep_alive import parse_keep_alive
from localserve.api.presets import ModelPreset
from localserve.api.requests import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    validate,
)
from localserve.api.sse import DONE, sse_data
from localserve.errors import (
    BackendUnavailableError,
    ModelInUseError,
    ModelNotFoundError,
    RepoNotFoundError,
)
from localserve.hub.catalog import parse_pull_spec
from localserve.hub.library import ModelRecord
from localserve.router.backend import ModelCard, Payload
from localserve.router.local import LOCAL_BACKEND
from localserve.server.ports import LoadedModel, PullUpdate

MODEL = "tiny"
CONTENT = ["Hel", "lo", " world"]
TOOL_CALL = {"id": "call_fake0001", "name": "get_weather", "arguments": ['{"city": ', '"Paris"}']}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
REASONING = ["The user ", "says hello."]
REASONING_USAGE = {
    "prompt_tokens": 7,
    "completion_tokens": 8,
    "total_tokens": 15,
    "completion_tokens_details": {"reasoning_tokens": 5},
}
EMBEDDING = [0.25, -0.5, 1.0]
PROMPT_TOKENS_COUNTED = 9  # what /tokenize/chat (Anthropic's count_tokens) answers
CREATED = 1_700_000_000
LOST = "The model's runner stopped in the middle of this response; it is restarting."

SCHEMAS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/tokenize/chat": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
}


@dataclass
class Sent:
    path: str
    payload: Payload


@dataclass
class FakeUpstream:
    """An opened answer: a JSON body, or SSE events (``fail_after`` of them, then an error)."""

    status_code: int
    body: bytes = b""
    events: list[bytes] = field(default_factory=list)
    fail_after: int | None = None
    content_type: str = "application/json"
    client_headers: dict[str, str] = field(default_factory=dict)
    closed: bool = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for index, event in enumerate(self.events):
            if index == self.fail_after:
                raise BackendUnavailableError(LOST)
            yield event

    async def aread(self) -> bytes:
        return self.body if not self.events else b"".join(self.events)

    async def aclose(self) -> None:
        self.closed = True


def json_upstream(status: int, body: Any) -> FakeUpstream:
    return FakeUpstream(status, json.dumps(body).encode())


def refused(error: APIError) -> FakeUpstream:
    """A request the runner refuses: OpenAI's error body, as the runner sends it."""
    return json_upstream(
        error.status_code, error_body(error.message, error.error_type, error.code, error.param)
    )


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def text_chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "text": text, "finish_reason": finish}],
    }


@dataclass
class FakeBackend:
    name: str = LOCAL_BACKEND
    model_ids: tuple[str, ...] = (MODEL,)
    tool_call: bool = False  # chat answers call TOOL_CALL after their text
    fail_after: int | None = None  # streams die after this many SSE events
    sent: list[Sent] = field(default_factory=list)
    opened: list[FakeUpstream] = field(default_factory=list)
    reasoning: bool = False  # chat answers think (REASONING) before their text

    def models(self) -> list[ModelCard]:
        return [ModelCard(id=model, owned_by="local", created=CREATED) for model in self.model_ids]

    def serves(self, model: str) -> bool:
        return model.strip().lower() in self.model_ids

    async def send(self, path: str, payload: Payload) -> FakeUpstream:
        self.sent.append(Sent(path, payload))
        upstream = self._answer(path, dict(payload))
        self.opened.append(upstream)
        return upstream

    def _answer(self, path: str, payload: Payload) -> FakeUpstream:
        parse_keep_alive(payload.pop("keep_alive", None))  # ours, as the local backend's
        schema = SCHEMAS.get(path)
        if schema is None:
            return json_upstream(404, error_body(f"No route {path}", "invalid_request_error"))
        try:
            request = validate(schema, payload)
        except APIError as exc:
            return refused(exc)
        if path == "/tokenize/chat":
            return json_upstream(200, {"input_tokens": PROMPT_TOKENS_COUNTED})
        if isinstance(request, EmbeddingRequest):
            return json_upstream(200, self._embeddings(request))
        assert isinstance(request, (ChatCompletionRequest, CompletionRequest))
        chat = isinstance(request, ChatCompletionRequest)
        if not request.stream:
            return json_upstream(200, self._whole(chat))
        events = [sse_data(chunk) for chunk in self._chunks(chat, request.include_usage)]
        return FakeUpstream(
            200,
            events=[*events, DONE],
            fail_after=self.fail_after,
            content_type="text/event-stream",
        )

    def _finish(self, chat: bool) -> str:
        return "tool_calls" if chat and self.tool_call else "stop"

    def _usage(self, chat: bool) -> dict[str, Any]:
        return REASONING_USAGE if chat and self.reasoning else USAGE

    def _whole(self, chat: bool) -> dict[str, Any]:
        text = "".join(CONTENT)
        if not chat:
            whole = text_chunk(text, "stop")
            return {**whole, "usage": USAGE}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.reasoning:
            message["reasoning_content"] = "".join(REASONING)
        if self.tool_call:
            message["tool_calls"] = [
                {
                    "id": TOOL_CALL["id"],
                    "type": "function",
                    "function": {
                        "name": TOOL_CALL["name"],
                        "arguments": "".join(TOOL_CALL["arguments"]),
                    },
                }
            ]
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish(chat)}],
            "usage": self._usage(chat),
        }

    def _chunks(self, chat: bool, include_usage: bool) -> list[dict[str, Any]]:
        if not chat:
            chunks = [text_chunk(piece) for piece in CONTENT] + [text_chunk("", "stop")]
        else:
            chunks = [chat_chunk({"role": "assistant", "content": ""})]
            if self.reasoning:
                chunks += [chat_chunk({"reasoning_content": piece}) for piece in REASONING]
            chunks += [chat_chunk({"content": piece}) for piece in CONTENT]
            if self.tool_call:
                start = {
                    "index": 0,
                    "id": TOOL_CALL["id"],
                    "type": "function",
                    "function": {"name": TOOL_CALL["name"], "arguments": ""},
                }
                chunks.append(chat_chunk({"tool_calls": [start]}))
                for piece in TOOL_CALL["arguments"]:
                    more = {"index": 0, "function": {"arguments": piece}}
                    chunks.append(chat_chunk({"tool_calls": [more]}))
            chunks.append(chat_chunk({}, self._finish(chat)))
        if include_usage:
            chunks.append({**chunks[-1], "choices": [], "usage": self._usage(chat)})
        return chunks

    def _embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": EMBEDDING}
                for index, _ in enumerate(request.inputs)
            ],
            "model": MODEL,
            "usage": {"prompt_tokens": len(request.inputs), "total_tokens": len(request.inputs)},
        }


def library_record(name: str = MODEL, **changes: Any) -> ModelRecord:
    """A library record of a small llama model (SmolLM2-135M's shape), with ``changes``."""
    record = ModelRecord(
        name=name,
        files=[f"{name}.gguf"],
        size_bytes=100_000_000,
        architecture="llama",
        parameter_count=135_000_000,
        context_length=2048,
        quant_type="Q4_1",
        layers=30,
        embedding_length=576,
        head_count=9,
        head_count_kv=3,
        key_length=64,
        value_length=64,
        vocab_size=49152,
        has_chat_template=True,
        supports_fim=False,
        sha256={f"{name}.gguf": "ab" * 32},
        added_at=CREATED,
    )
    return dataclasses.replace(record, **changes)


@dataclass
class FakeCatalog:
    """A ``ModelCatalog`` with one installed model, loaded on demand and never removable (it is
    the one served by default)."""

    models: dict[str, ModelRecord] = field(default_factory=lambda: {MODEL: library_record()})
    loaded_names: set[str] = field(default_factory=set)

    def installed(self) -> list[ModelRecord]:
        return list(self.models.values())

    def find(self, name: str) -> ModelRecord | None:
        return self.models.get(name.strip().lower())

    def preset(self, name: str) -> ModelPreset | None:
        return None  # no model of the fake has settings of its own

    def names(self) -> list[str]:
        return sorted(self.models)

    def loaded(self) -> list[LoadedModel]:
        return [LoadedModel(name, on_gpu=False) for name in sorted(self.loaded_names)]

    async def load(self, name: str) -> None:
        if self.find(name) is None:
            raise ModelNotFoundError(name, self.names())
        self.loaded_names.add(name.strip().lower())

    async def unload(self, name: str) -> bool:
        wanted = name.strip().lower()
        was_loaded = wanted in self.loaded_names
        self.loaded_names.discard(wanted)
        return was_loaded

    async def unload_if_loaded(self, name: str) -> None:
        await self.unload(name)

    async def remove(self, name: str) -> ModelRecord:
        record = self.find(name)
        if record is None:
            raise ModelNotFoundError(name, self.names())
        raise ModelInUseError(f"{record.name} is the model this daemon serves by default.")


class FakePulls:
    """``ModelPulls`` with a Hub that has no repos: the spec is parsed as the pull manager
    parses it, then the pull fails before its first update (a 404)."""

    async def pull(self, spec: str) -> AsyncIterator[PullUpdate]:
        repo, _ = parse_pull_spec(spec)
        raise RepoNotFoundError(f"No repo {repo} on this fake Hub.")
        yield  # type: ignore[unreachable]  # an async generator, as the daemon's
