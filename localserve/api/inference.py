"""One inference request, whatever protocol it came in: what the gateway's one inference route
(``server/inference.py``) sends to a backend, and how a protocol turns the answer into its own.

Every backend speaks OpenAI, so a protocol adapter is two pure halves: a parser that makes an
``InferenceCall`` (an OpenAI request and the backend path it goes to), and a ``ReplyTranslator``
that turns OpenAI's answer, whole or streamed, into that protocol's body. OpenAI's own routes
need no translator: the backend's bytes are relayed as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

OpenAIBody = dict[str, Any]  # an OpenAI request, answer or stream chunk, as JSON


@dataclass(frozen=True)
class InferenceCall:
    """An OpenAI request (``payload``, with its ``model``) for the backend's ``path``."""

    path: str  # /v1/chat/completions, /v1/completions, /v1/embeddings ...
    payload: OpenAIBody
    stream: bool = False
    # Run once the answer has been read (before the last line of a stream): Ollama's
    # keep_alive 0 unloads the model here.
    after: Callable[[], Awaitable[None]] | None = None

    @property
    def model(self) -> str:
        return str(self.payload["model"])


class ReplyTranslator(Protocol):
    """A protocol's whole answer, from OpenAI's."""

    def whole(self, reply: OpenAIBody) -> dict[str, Any]: ...


@runtime_checkable
class StreamTranslator(ReplyTranslator, Protocol):
    """A protocol's streamed answer too: its events or lines from OpenAI's stream chunks.

    An error midway arrives as ``BackendUnavailableError`` from ``chunks``; the translator
    ends its stream with that protocol's error event.
    """

    media_type: str

    def stream(self, chunks: AsyncIterator[OpenAIBody]) -> AsyncIterator[bytes]: ...
