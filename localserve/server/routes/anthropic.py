"""Anthropic's Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``) over the same
models, keys and routing as the OpenAI API: the request is translated by
``protocols/anthropic.py`` and answered by the one inference route (``server/inference.py``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localserve.api.errors import APIError
from localserve.api.requests import validate
from localserve.protocols.anthropic import (
    AnthropicReply,
    CountTokensRequest,
    MessagesRequest,
    messages_call,
    openai_messages,
    openai_tools,
    thinking_fields,
)
from localserve.router.local import LOCAL_BACKEND
from localserve.router.router import Router
from localserve.server.inference import serve_inference
from localserve.server.request_body import read_json
from localserve.server.upstream import json_body


def anthropic_routes(router: Router) -> list[Route]:
    async def messages(request: Request) -> Response:
        body = validate(MessagesRequest, await read_json(request))
        return await serve_inference(
            request, router, messages_call(body), AnthropicReply(body.model, body.thinking)
        )

    async def count_tokens(request: Request) -> Response:
        body = validate(CountTokensRequest, await read_json(request))
        payload = {
            "model": body.model,
            "messages": openai_messages(body),
            **openai_tools(body),
            **thinking_fields(body.thinking),  # a template may write thinking on or off
        }
        route = router.route(body.model)
        if route.backend.name != LOCAL_BACKEND:
            raise APIError(
                400, "count_tokens works for local models only; cloud providers count their own."
            )
        counted = await json_body(await route.backend.send("/tokenize/chat", payload))
        return JSONResponse({"input_tokens": counted["input_tokens"]})

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
