"""OpenAI's wire format, as the other protocols' translators read it: tool calls put together
from stream deltas, a call's JSON arguments as an object, a thinking model's thoughts, and
OpenAI's error body. Pure: no HTTP, no FastAPI. (OpenAI's requests are checked by
``api/requests.py``; backends answer in OpenAI's shape, so its replies are relayed as they
are.)"""

from __future__ import annotations

import json
from typing import Any

from localserve.api.errors import APIError, error_body


def openai_body(model: str, stream: bool, **fields: Any) -> dict[str, Any]:
    """The OpenAI request another protocol's request becomes: ``fields`` that are set (None
    ones left out) and, when it streams, usage in the last chunk, since Anthropic, Ollama and
    the Responses API all report token counts at the end of a stream."""
    body = {"model": model, "stream": stream}
    body.update({name: value for name, value in fields.items() if value is not None})
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def error_object(err: APIError) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return error_body(err.message, err.error_type, err.code, err.param)


class StreamedToolCalls:
    """Tool calls put together from stream deltas: OpenAI sends each call's id and name first
    and its arguments in pieces, keyed by ``index``."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, delta: dict[str, Any]) -> None:
        for piece in delta.get("tool_calls") or []:
            call = self._calls.setdefault(
                int(piece.get("index", 0)),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] = piece.get("id") or call["id"]
            function = piece.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""

    def calls(self) -> list[dict[str, Any]]:
        return [self._calls[index] for index in sorted(self._calls)]


def call_arguments(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as an object ({} when they are not one), for the protocols
    that send arguments as objects (Anthropic's ``input``, Ollama's ``arguments``)."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def reasoning_of(message: dict[str, Any]) -> str:
    """The thoughts in an OpenAI answer's message or a stream delta (``reasoning_content``, as
    llama-server and DeepSeek send them): "" when there are none, or when a backend sends
    something else there."""
    thought = message.get("reasoning_content")
    return thought if isinstance(thought, str) else ""
