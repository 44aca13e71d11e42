"""Opening a backend for a request, and reading what it answers, for every protocol we speak.

The OpenAI routes relay the backend's bytes as they are; the Anthropic and Ollama routes read
the same OpenAI-shaped answers (``json_body``, ``openai_chunks``) and translate them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from localserve.api.errors import APIError
from localserve.errors import BackendUnavailableError, ModelLoadError
from localserve.router.backend import Backend, Payload, UpstreamResponse
from localserve.router.router import Router


async def open_route(
    router: Router, path: str, payload: Payload
) -> tuple[Backend, UpstreamResponse]:
    """Send ``payload`` to the backend for its model (or its cloud fallback) and open the
    response. The caller must ``aclose()`` it."""
    model = str(payload["model"])
    route = router.route(model)
    try:
        return route.backend, await route.backend.send(path, route.payload(payload))
    except ModelLoadError as exc:
        fallback = router.fallback(model, exc)
        if fallback is None:
            raise
        return fallback.backend, await fallback.backend.send(path, fallback.payload(payload))


def upstream_error(status: int, body: bytes) -> APIError:
    """An OpenAI error body from a backend, as an APIError (rendered in the caller's protocol)."""
    try:
        error = json.loads(body)["error"]
        message = str(error.get("message") or error)
        return APIError(status, message, str(error.get("type") or "api_error"), error.get("code"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return APIError(status, body.decode("utf-8", "replace")[:500] or f"HTTP {status}")


async def json_body(upstream: UpstreamResponse) -> dict[str, Any]:
    """The whole JSON answer; APIError when the backend answered with an error."""
    try:
        body = await upstream.aread()
    finally:
        await upstream.aclose()
    if upstream.status_code != 200:
        raise upstream_error(upstream.status_code, body)
    result: dict[str, Any] = json.loads(body)
    return result


async def ensure_ok(upstream: UpstreamResponse) -> None:
    """Raise the backend's error (closing the response) unless it answered 200."""
    if upstream.status_code != 200:
        try:
            raise upstream_error(upstream.status_code, await upstream.aread())
        finally:
            await upstream.aclose()


async def openai_chunks(upstream: UpstreamResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of an OpenAI SSE stream, until ``[DONE]``. An error event, or a backend
    lost midway, raises BackendUnavailableError. Closes the upstream when done."""
    pending = b""
    try:
        async for raw in upstream.aiter_bytes():
            pending += raw
            *events, pending = pending.split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: "):
                        continue
                    data = line[len(b"data: ") :]
                    if data.strip() == b"[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise BackendUnavailableError(str(chunk["error"].get("message")))
                    yield chunk
    finally:
        await upstream.aclose()
