"""The one inference route: every protocol's chat, generate, messages and embed requests end here.

A protocol's route parses its request into an ``InferenceCall`` and hands it over with its
``ReplyTranslator`` (none for OpenAI, whose backend bytes are relayed as they are). Here, once
for all of them: the backend is chosen (with its cloud fallback), the answer read whole or
streamed, translated, the ``x-localserve-backend`` header set, and the work cancelled when the
client goes away. Errors before the answer starts are raised (the app renders them in the
caller's protocol); errors midway travel inside the stream, as the translator shapes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from localserve.api.errors import APIError
from localserve.api.inference import InferenceCall, OpenAIBody, ReplyTranslator, StreamTranslator
from localserve.asgi.disconnect import cancel_on_disconnect
from localserve.router.router import Router
from localserve.server.relay import BACKEND_HEADER, relay
from localserve.server.upstream import ensure_ok, json_body, open_route, openai_chunks


async def serve_inference(
    request: Request,
    router: Router,
    call: InferenceCall,
    translator: ReplyTranslator | None = None,
) -> Response:
    """Answer ``call`` from its backend, in the protocol of ``translator`` (OpenAI's if None).

    Call after the request body has been read (``cancel_on_disconnect`` listens from then on).
    """
    return await cancel_on_disconnect(request, _answer(router, call, translator))


async def _answer(
    router: Router, call: InferenceCall, translator: ReplyTranslator | None
) -> Response:
    backend, upstream = await open_route(router, call.path, call.payload)
    if translator is None:
        return await relay(backend.name, upstream, call.stream)
    headers = {BACKEND_HEADER: backend.name}
    if not call.stream:
        reply = await json_body(upstream)
        if call.after is not None:
            await call.after()
        return JSONResponse(translator.whole(reply), headers=headers)
    if not isinstance(translator, StreamTranslator):
        await upstream.aclose()
        raise APIError(400, 'This endpoint does not stream; send "stream": false.')
    await ensure_ok(upstream)
    chunks = _then(openai_chunks(upstream), call)
    return StreamingResponse(
        translator.stream(chunks),
        media_type=translator.media_type,
        headers={**headers, "cache-control": "no-cache"},
    )


async def _then(
    chunks: AsyncIterator[OpenAIBody], call: InferenceCall
) -> AsyncIterator[OpenAIBody]:
    """``chunks``, then ``call.after`` once they are all read (not after an error midway)."""
    async for chunk in chunks:
        yield chunk
    if call.after is not None:
        await call.after()
