"""OpenAI's Responses API: ``POST /v1/responses`` (translated by ``protocols/responses.py`` and
answered by the one inference route), and the stored responses a key made:
``GET``/``DELETE /v1/responses/{id}``. A response is kept unless the request says
``"store": false``; a follow-up names it in ``previous_response_id`` and sends only what is new.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from localserve.api.errors import APIError
from localserve.api.requests import validate
from localserve.protocols.responses import (
    ResponsesReply,
    ResponsesRequest,
    input_messages,
    output_messages,
    responses_call,
)
from localserve.router.router import Router
from localserve.server.auth import Principal
from localserve.server.inference import serve_inference
from localserve.server.request_body import read_json
from localserve.server.response_store import ResponseStore, StoredResponse


def owner(request: Request) -> str:
    principal: Principal = request.state.principal
    return principal.name


def not_found(response_id: str) -> APIError:
    return APIError(
        404, f"No response with id '{response_id}'.", param="response_id", code="not_found"
    )


def responses_routes(router: Router, store: ResponseStore) -> APIRouter:
    api = APIRouter(prefix="/v1/responses")

    def stored(request: Request, response_id: str) -> StoredResponse:
        kept = store.get(owner(request), response_id)
        if kept is None:
            raise not_found(response_id)
        return kept

    @api.post("")
    async def create(request: Request) -> Response:
        body = validate(ResponsesRequest, await read_json(request))
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
        conversation = earlier + input_messages(body)

        def keep(response: dict[str, Any]) -> None:
            store.put(owner(request), response, conversation + output_messages(response))

        reply = ResponsesReply(body, keep if body.store is not False else None)
        return await serve_inference(request, router, responses_call(body, conversation), reply)

    @api.get("/{response_id}")
    async def retrieve(request: Request, response_id: str) -> dict[str, Any]:
        return stored(request, response_id).response

    @api.delete("/{response_id}")
    async def delete(request: Request, response_id: str) -> dict[str, Any]:
        if not store.delete(owner(request), response_id):
            raise not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    return api
