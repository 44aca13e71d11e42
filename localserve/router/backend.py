"""The one interface every backend implements: OpenAI-compatible HTTP, relayed as bytes.

A local runner and (later) a cloud provider differ only in where the bytes come from. The gateway
never re-encodes a stream: it relays the backend's SSE bytes as they arrive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

Payload = dict[str, Any]


@dataclass(frozen=True)
class ModelCard:
    id: str
    owned_by: str
    created: int
    capabilities: tuple[str, ...] = ()  # a local model's, in Ollama's words ("thinking"...)


class UpstreamResponse(Protocol):
    """An open response from a backend; the caller must ``aclose()`` it."""

    @property
    def status_code(self) -> int: ...

    @property
    def content_type(self) -> str: ...

    @property
    def client_headers(self) -> dict[str, str]:
        """Upstream headers the client should see too (``retry-after``...)."""
        ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    name: str  # reported in the x-localserve-backend header

    def models(self) -> list[ModelCard]: ...

    def serves(self, model: str) -> bool:
        """Whether a request naming ``model`` belongs here (cheap: called per request)."""
        ...

    async def send(self, path: str, payload: Payload) -> UpstreamResponse:
        """POST ``payload`` to ``path`` (e.g. ``/v1/chat/completions``) and open the response.

        Raises BackendUnavailableError (or ModelLoadError) when the backend cannot be reached.
        """
        ...
