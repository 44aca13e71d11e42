"""The OpenAI-compatible API: ``/v1/models``, chat, completions, embeddings (the Responses API
is ``routes/responses.py``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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


def openai_routes(router: Router) -> list[Route]:
    async def list_models(request: Request) -> Response:
        await router.list_cloud_models_soon()
        return JSONResponse(
            {"object": "list", "data": [model_object(card) for card in router.models()]}
        )

    async def get_model(request: Request) -> Response:
        return JSONResponse(model_object(router.card(request.path_params["model_id"])))

    async def forward(request: Request, path: str, schema: type[BaseModel]) -> Response:
        payload = await read_json(request)
        body = validate(schema, payload)
        call = InferenceCall(path, payload, bool(getattr(body, "stream", False)))
        return await serve_inference(request, router, call)

    async def chat_completions(request: Request) -> Response:
        return await forward(request, "/v1/chat/completions", ChatCompletionRequest)

    async def completions(request: Request) -> Response:
        return await forward(request, "/v1/completions", CompletionRequest)

    async def embeddings(request: Request) -> Response:
        return await forward(request, "/v1/embeddings", EmbeddingRequest)

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
