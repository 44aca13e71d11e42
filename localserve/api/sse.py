"""Server-sent events, framed once for every stream we send (OpenAI's and Ollama's ``data:``
lines, Anthropic's named events), and read once for the clients we ship (the chat window and
`localserve chat`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DONE = b"data: [DONE]\n\n"


def sse_data(payload: Any) -> bytes:
    """One unnamed event carrying ``payload`` as compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n\n"


def sse_event(event: str, payload: Any) -> bytes:
    """One named event (``event: NAME``), as Anthropic's streams send them."""
    return f"event: {event}\n".encode() + sse_data(payload)


class SSEDecoder:
    """The ``data`` of each server-sent event, from bytes as they arrive (any split)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = self._buffer[:end].rstrip(b"\r")
            self._buffer = self._buffer[end + 1 :]
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(b":"):
                continue  # a comment (keep-alive)
            name, _, value = line.partition(b":")
            if name == b"data":
                self._data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
        return events


@dataclass
class ChunkParts:
    """What one OpenAI stream chunk carries for a chat window."""

    text: str = ""
    thought: str = ""
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    error: Any = None


def read_chunk(data: str) -> ChunkParts | None:
    """One event's data as a chunk; None for ``[DONE]`` and for data that is not JSON."""
    if data.strip() == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    if not isinstance(chunk, dict):
        return None
    parts = ChunkParts(usage=chunk.get("usage") or None, error=chunk.get("error"))
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        parts.text += delta.get("content") or ""
        parts.thought += delta.get("reasoning_content") or delta.get("reasoning") or ""
        parts.finish_reason = choice.get("finish_reason") or parts.finish_reason
    return parts
