"""OpenAI's Responses API: ``POST /v1/responses`` (translated by ``protocols/responses.py`` and
answered by the one inference route), the stored responses a key made:
``GET``/``DELETE /v1/responses/{id}``, and ``POST /v1/responses/input_tokens``, which counts
the prompt a request would have (local models only, by their runner's tokenizer and chat
template). A response is kept unless the request says ``"store": false``; a follow-up names it
in ``previous_response_id`` and sends only what is new. A cloud provider that speaks the
Responses API itself (``Provider.speaks_responses``) gets the request as it is, and keeps it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from localserve.api.errors import APIError
from localserve.api.inference import InferenceCall
from localserve.api.requests import validate
from localserve.protocols.responses import (
    ResponsesReply,
    ResponsesRequest,
    input_messages,
    input_tokens_payload,
    output_messages,
    responses_call,
)
from localserve.router.cloud import RESPONSES_PATH
from localserve.router.local import LOCAL_BACKEND
from localserve.router.router import Router
from localserve.server.auth import Principal
from localserve.server.inference import serve_inference
from localserve.server.request_body import read_json
from localserve.server.response_store import ResponseStore, StoredResponse
from localserve.server.upstream import json_body


def owner(request: Request) -> str:
    principal: Principal = request.state.principal
    return principal.name


def not_found(response_id: str) -> APIError:
    return APIError(
        404, f"No response with id '{response_id}'.", param="response_id", code="not_found"
    )


def conversation(
    store: ResponseStore, request: Request, body: ResponsesRequest
) -> list[dict[str, Any]]:
    """The chat so far: the stored conversation of ``previous_response_id``, then the input."""
    earlier: list[dict[str, Any]] = []
    if body.previous_response_id:
        kept = store.get(owner(request), body.previous_response_id)
        if kept is None:
            raise APIError(
                400,
                f"Previous response with id '{body.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        earlier = kept.conversation
    return earlier + input_messages(body)


def responses_routes(router: Router, store: ResponseStore) -> APIRouter:
    api = APIRouter(prefix="/v1/responses")

    def stored(request: Request, response_id: str) -> StoredResponse:
        kept = store.get(owner(request), response_id)
        if kept is None:
            raise not_found(response_id)
        return kept

    @api.post("")
    async def create(request: Request) -> Response:
        payload = await read_json(request)
        body = validate(ResponsesRequest, payload)
        if relayed(request, body):
            call = InferenceCall(RESPONSES_PATH, payload, body.stream)
            return await serve_inference(request, router, call)
        chat = conversation(store, request, body)

        def keep(response: dict[str, Any]) -> None:
            store.put(owner(request), response, chat + output_messages(response))

        reply = ResponsesReply(body, keep if body.store is not False else None)
        return await serve_inference(request, router, responses_call(body, chat), reply)

    def relayed(request: Request, body: ResponsesRequest) -> bool:
        """Whether the request goes as it is to a provider that speaks the Responses API: not
        when it continues a response stored here, which the provider has never seen."""
        previous = body.previous_response_id
        if previous and store.get(owner(request), previous) is not None:
            return False
        return router.speaks_responses(body.model)

    @api.post("/input_tokens")
    async def input_tokens(request: Request) -> Response:
        body = validate(ResponsesRequest, await read_json(request))
        payload = input_tokens_payload(body, conversation(store, request, body))
        route = router.route(body.model)
        if route.backend.name != LOCAL_BACKEND:
            raise APIError(
                400,
                "input_tokens works for local models only; cloud providers count their own.",
                param="model",
            )
        counted = await json_body(await route.backend.send("/tokenize/chat", payload))
        return JSONResponse(
            {"object": "response.input_tokens", "input_tokens": counted["input_tokens"]}
        )

    @api.get("/{response_id}")
    async def retrieve(request: Request, response_id: str) -> dict[str, Any]:
        return stored(request, response_id).response

    @api.delete("/{response_id}")
    async def delete(request: Request, response_id: str) -> dict[str, Any]:
        if not store.delete(owner(request), response_id):
            raise not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    return api
