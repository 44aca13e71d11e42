"""The OpenAI-compatible API: ``/v1/models``, chat, completions, embeddings (the Responses API
is ``routes/responses.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from localserve.api.inference import InferenceCall
from localserve.api.requests import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    validate,
)
from localserve.router.backend import ModelCard
from localserve.router.router import Router
from localserve.server.inference import serve_inference
from localserve.server.request_body import read_json


def model_object(card: ModelCard) -> dict[str, Any]:
    """OpenAI's model object; a local model's also lists what it can do (``capabilities``, as
    Ollama's /api/show: "tools", "thinking"...), for clients that look."""
    found = {"id": card.id, "object": "model", "created": card.created, "owned_by": card.owned_by}
    return {**found, "capabilities": list(card.capabilities)} if card.capabilities else found


def openai_routes(router: Router) -> APIRouter:
    api = APIRouter(prefix="/v1")

    # response_model=None: the dict goes out as it is. From the return annotation FastAPI would
    # build a validator for each route, importing pydantic.v1 to vet it, as the daemon starts.
    @api.get("/models", response_model=None)
    async def list_models() -> dict[str, Any]:
        await router.list_cloud_models_soon()
        return {"object": "list", "data": [model_object(card) for card in router.models()]}

    @api.get("/models/{model_id:path}", response_model=None)
    async def get_model(request: Request) -> dict[str, Any]:
        # Read from the request, not declared as a parameter: FastAPI would vet it as the
        # return annotation above, at the same cost.
        return model_object(router.card(request.path_params["model_id"]))

    async def forward(request: Request, path: str, schema: type[BaseModel]) -> Response:
        payload = await read_json(request)
        body = validate(schema, payload)
        call = InferenceCall(path, payload, bool(getattr(body, "stream", False)))
        return await serve_inference(request, router, call)

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
