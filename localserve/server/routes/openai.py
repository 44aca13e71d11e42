"""The OpenAI-compatible API: ``/v1/models``, chat, completions, embeddings."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from localserve.router.backend import ModelCard
from localserve.router.router import Router
from localserve.server.disconnect import cancel_on_disconnect
from localserve.server.errors import APIError
from localserve.server.relay import relay
from localserve.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from localserve.server.upstream import open_route

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_BODY_TIMEOUT_S = 30.0


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object in the body, read within the app's ``body_timeout`` (slow senders get
    408 rather than holding the connection)."""
    timeout = float(getattr(request.app.state, "body_timeout", DEFAULT_BODY_TIMEOUT_S))
    try:
        raw = await asyncio.wait_for(request.body(), timeout)
    except asyncio.TimeoutError:
        raise APIError(
            408, f"The request body did not arrive within {timeout:.0f} s.", code="body_timeout"
        ) from None
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"Malformed JSON in request body: {exc}", code="invalid_json") from exc
    if not isinstance(payload, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    return payload


def validate(model: type[ModelT], payload: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(400, f"Invalid '{param}': {first['msg']}.", param=param) from exc


def model_object(card: ModelCard) -> dict[str, Any]:
    return {"id": card.id, "object": "model", "created": card.created, "owned_by": card.owned_by}


def openai_routes(router: Router) -> APIRouter:
    api = APIRouter(prefix="/v1")

    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        await router.list_cloud_models_soon()
        return {"object": "list", "data": [model_object(card) for card in router.models()]}

    @api.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        return model_object(router.card(model_id))

    async def forward(request: Request, path: str, schema: type[BaseModel]) -> Response:
        payload = await read_json(request)
        body = validate(schema, payload)
        stream = bool(getattr(body, "stream", False))

        async def answer() -> Response:
            backend, upstream = await open_route(router, path, payload)
            return await relay(backend.name, upstream, stream)

        return await cancel_on_disconnect(request, answer())

    @api.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await forward(request, "/v1/chat/completions", ChatCompletionRequest)

    @api.post("/completions")
    async def completions(request: Request) -> Response:
        return await forward(request, "/v1/completions", CompletionRequest)

    @api.post("/embeddings")
    async def embeddings(request: Request) -> Response:
        return await forward(request, "/v1/embeddings", EmbeddingRequest)

    return api
