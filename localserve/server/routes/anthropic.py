"""Anthropic's Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``) over the same
models, keys and routing as the OpenAI API.

A request is translated into an OpenAI chat request, routed like any other (local runner or
cloud provider), and the answer translated back: a message object, or Anthropic's stream of
``message_start`` ... ``message_stop`` events. Errors use Anthropic's shape (server/errors.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from localserve.api.errors import APIError
from localserve.api.requests import validate
from localserve.asgi.disconnect import cancel_on_disconnect
from localserve.protocols.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    message_events,
    message_object,
    openai_messages,
    openai_request,
    openai_tools,
)
from localserve.router.local import LOCAL_BACKEND
from localserve.router.router import Router
from localserve.server.relay import BACKEND_HEADER
from localserve.server.request_body import read_json
from localserve.server.upstream import (
    ensure_ok,
    json_body,
    open_route,
    openai_chunks,
)


def anthropic_routes(router: Router) -> APIRouter:
    api = APIRouter(prefix="/v1/messages")

    @api.post("")
    async def messages(request: Request) -> Response:
        body = validate(MessagesRequest, await read_json(request))
        payload = openai_request(body)

        async def answer() -> Response:
            backend, upstream = await open_route(router, "/v1/chat/completions", payload)
            headers = {BACKEND_HEADER: backend.name}
            if not body.stream:
                reply = await json_body(upstream)
                return JSONResponse(message_object(body.model, reply), headers=headers)
            await ensure_ok(upstream)
            return StreamingResponse(
                message_events(body.model, openai_chunks(upstream)),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )

        return await cancel_on_disconnect(request, answer())

    @api.post("/count_tokens")
    async def count_tokens(request: Request) -> Response:
        body = validate(CountTokensRequest, await read_json(request))
        payload = {"model": body.model, "messages": openai_messages(body), **openai_tools(body)}
        route = router.route(body.model)
        if route.backend.name != LOCAL_BACKEND:
            raise APIError(
                400, "count_tokens works for local models only; cloud providers count their own."
            )
        counted = await json_body(await route.backend.send("/tokenize/chat", payload))
        return JSONResponse({"input_tokens": counted["input_tokens"]})

    return api
