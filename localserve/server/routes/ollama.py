"""Ollama's API (``/api/...``) over the same models, keys and routing as the OpenAI API.

Chat, generate and embed are translated by ``protocols/ollama.py`` and answered by the one
inference route (``server/inference.py``): Ollama's NDJSON stream, or one object with
``"stream": false``. Tags, show, ps, pull and delete read and change the installed models
through the narrow ``ModelCatalog`` and ``ModelPulls`` interfaces (``server/ports.py``). Pull
and delete change the library, so they need the admin key.

Ollama's ``options.num_ctx`` is ignored (the context is a daemon setting). ``keep_alive`` sets
how long the model stays loaded after the request, as in Ollama; ``0`` unloads it before the
answer ends. ``think`` turns a thinking model's thoughts on or off (or sets their effort); they
come back apart from the answer, in ``thinking``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from localserve.api.control import PullState
from localserve.api.errors import APIError, api_error_from
from localserve.api.presets import ollama_parameters
from localserve.errors import ModelNotFoundError
from localserve.hub.library import ModelRecord
from localserve.protocols.ollama import (
    NDJSON,
    OLLAMA_API_VERSION,
    EmbedReply,
    OllamaReply,
    Unload,
    chat_call,
    embed_call,
    generate_call,
    load_answer,
    loads_only,
    model_name,
    ndjson,
    shows_thinking,
    streams,
    unloads_now,
)
from localserve.router.router import Router
from localserve.server.auth import Principal
from localserve.server.inference import serve_inference
from localserve.server.ports import ModelCatalog, ModelPulls, PullUpdate
from localserve.server.request_body import read_json


def details(record: ModelRecord | None) -> dict[str, Any]:
    if record is None:
        return {
            "format": "gguf",
            "family": "",
            "families": [],
            "parameter_size": "",
            "quantization_level": "",
        }
    count = record.parameter_count
    size = f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": record.architecture,
        "families": [record.architecture],
        "parameter_size": size,
        "quantization_level": record.quant_type,
    }


def digest(record: ModelRecord) -> str:
    return next(iter(record.sha256.values()), "")


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def require_admin(request: Request) -> None:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None or not principal.is_admin:
        raise APIError(403, "Pulling and deleting models needs the admin key.")


def progress_event(update: PullUpdate) -> dict[str, Any] | None:
    """Ollama's status for a pull under way (None once it has ended)."""
    if update.state is PullState.WAITING:
        return {"status": f"waiting for network: {update.waiting_reason}"}
    if update.state is PullState.RUNNING:
        return {
            "status": f"pulling {update.file}",
            "digest": update.file,
            "total": update.total_bytes,
            "completed": update.done_bytes,
        }
    return None


def closing_events(last: PullUpdate) -> list[dict[str, Any]]:
    """Ollama's last statuses of a pull: "success", or the error."""
    if last.state is not PullState.DONE:
        return [{"error": last.error or "the download did not finish"}]
    return [
        {
            "status": f"pulling {last.file}",
            "digest": last.file,
            "total": last.total_bytes,
            "completed": last.total_bytes,
        },
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]


def pull_status(last: PullUpdate) -> int:
    """The HTTP status of a finished pull, for ``"stream": false``."""
    if last.state is PullState.DONE:
        return 200
    if last.failure is not None:
        return api_error_from(last.failure).status_code
    return 409 if last.state is PullState.CANCELLED else 500  # a bug, logged by the pull


class OllamaAPI:
    """The ``/api`` endpoints; each method is one route."""

    def __init__(self, router: Router, catalog: ModelCatalog, pulls: ModelPulls) -> None:
        self.router = router
        self.catalog = catalog
        self.pulls = pulls

    def routes(self) -> APIRouter:
        api = APIRouter(prefix="/api")
        api.add_api_route("/version", self.version, methods=["GET"])
        api.add_api_route("/tags", self.tags, methods=["GET"])
        api.add_api_route("/ps", self.ps, methods=["GET"])
        api.add_api_route("/show", self.show, methods=["POST"])
        api.add_api_route("/chat", self.chat, methods=["POST"])
        api.add_api_route("/generate", self.generate, methods=["POST"])
        api.add_api_route("/embed", self.embed, methods=["POST"])
        api.add_api_route("/pull", self.pull, methods=["POST"])
        api.add_api_route("/delete", self.delete, methods=["DELETE"])
        return api

    def unload_after(self, payload: dict[str, Any]) -> Unload:
        model = model_name(payload)

        async def unload() -> None:
            await self.catalog.unload_if_loaded(model)

        return unload

    # -- inference ---------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        payload = await read_json(request)
        call = chat_call(payload, self.unload_after(payload))
        reply = OllamaReply(call.model, "chat", shows_thinking(payload))
        return await serve_inference(request, self.router, call, reply)

    async def generate(self, request: Request) -> Response:
        payload = await read_json(request)
        if loads_only(payload):
            model = model_name(payload)
            if unloads_now(payload):
                await self.catalog.unload(model)
                return JSONResponse(load_answer(model, "unload"))
            await self.catalog.load(model)
            return JSONResponse(load_answer(model, "load"))
        call = generate_call(payload, self.unload_after(payload))
        reply = OllamaReply(call.model, "generate", shows_thinking(payload))
        return await serve_inference(request, self.router, call, reply)

    async def embed(self, request: Request) -> Response:
        payload = await read_json(request)
        call = embed_call(payload, self.unload_after(payload))
        return await serve_inference(request, self.router, call, EmbedReply(call.model))

    # -- models ------------------------------------------------------------------------------
    async def version(self) -> dict[str, str]:
        return {"version": OLLAMA_API_VERSION}

    async def tags(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": record.name,
                    "model": record.name,
                    "modified_at": iso_time(record.added_at),
                    "size": record.size_bytes,
                    "digest": digest(record),
                    "details": details(record),
                }
                for record in self.catalog.installed()
            ]
        }

    async def show(self, request: Request) -> dict[str, Any]:
        name = model_name(await read_json(request))
        record = self.catalog.find(name)
        if record is None:
            raise ModelNotFoundError(name, self.catalog.names())
        capabilities = record.capabilities()
        preset = self.catalog.preset(record.name)
        shown = {
            "modelfile": f"# served by localserve from the GGUF file of {record.name}",
            "parameters": ollama_parameters(preset),
            "template": (preset.chat_template if preset else None) or "",
            "details": details(record),
            "model_info": {
                "general.architecture": record.architecture,
                "general.parameter_count": record.parameter_count,
                f"{record.architecture}.context_length": record.context_length,
                f"{record.architecture}.block_count": record.layers,
                f"{record.architecture}.embedding_length": record.embedding_length,
            },
            "capabilities": capabilities,
        }
        if preset is not None and preset.system:
            shown["system"] = preset.system
        return shown

    async def ps(self) -> dict[str, Any]:
        loaded = []
        for model in self.catalog.loaded():
            record = self.catalog.find(model.name)
            size = record.size_bytes if record else 0
            loaded.append(
                {
                    "name": model.name,
                    "model": model.name,
                    "size": size,
                    "digest": digest(record) if record else "",
                    "details": details(record),
                    "expires_at": "2999-01-01T00:00:00Z",  # unloaded only when asked or evicted
                    "size_vram": size if model.on_gpu else 0,
                }
            )
        return {"models": loaded}

    async def pull(self, request: Request) -> Response:
        require_admin(request)
        payload = await read_json(request)
        spec = model_name(payload).removeprefix("hf.co/").removeprefix("huggingface.co/")
        updates = aiter(self.pulls.pull(spec))
        first = await anext(updates)  # a repo or quant that does not exist fails here
        if not streams(payload):
            last = first
            async for update in updates:
                last = update
            return JSONResponse(closing_events(last)[-1], status_code=pull_status(last))

        async def lines() -> AsyncIterator[bytes]:
            yield ndjson({"status": "pulling manifest"})
            last = first
            event = progress_event(first)
            while True:
                if event is not None:
                    yield ndjson(event)
                update = await anext(updates, None)
                if update is None:
                    break
                last, event = update, progress_event(update)
            for event in closing_events(last):
                yield ndjson(event)

        return StreamingResponse(lines(), media_type=NDJSON)

    async def delete(self, request: Request) -> Response:
        require_admin(request)
        await self.catalog.remove(model_name(await read_json(request)))
        return Response(status_code=200)


def ollama_routes(router: Router, catalog: ModelCatalog, pulls: ModelPulls) -> APIRouter:
    return OllamaAPI(router, catalog, pulls).routes()
