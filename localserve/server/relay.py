"""Relay a backend's response to the client without re-encoding it.

A stream is opened before the client's response starts, and its first chunk awaited, so a
backend that is down or dies early still produces a proper HTTP error (503) rather than a 200
followed by nothing. Later failures travel inside the stream as an OpenAI error event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from localserve.api.errors import api_error_from, sse_error_event
from localserve.api.sse import DONE
from localserve.errors import BackendUnavailableError
from localserve.router.backend import UpstreamResponse

BACKEND_HEADER = "x-localserve-backend"


async def relay(backend_name: str, upstream: UpstreamResponse, stream: bool) -> Response:
    """Pass an opened backend response to the client (``backend_name`` goes in a header)."""
    headers = {**upstream.client_headers, BACKEND_HEADER: backend_name}
    if not stream or upstream.status_code != 200:
        try:
            content = await upstream.aread()
        finally:
            await upstream.aclose()
        return Response(
            content,
            status_code=upstream.status_code,
            media_type=upstream.content_type,
            headers=headers,
        )

    chunks = upstream.aiter_bytes()
    try:
        first = await anext(chunks, b"")
    except BaseException:
        await upstream.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        except BackendUnavailableError as exc:
            yield sse_error_event(api_error_from(exc))
            yield DONE
        finally:
            # Also runs when the client disconnects: closing our side of the runner's stream
            # is what tells the runner to stop generating.
            await upstream.aclose()

    headers["cache-control"] = "no-cache"
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
