"""Ollama's API (``/api/...``) over the same models, keys and routing as the OpenAI API.

Chat, generate and embed are translated into OpenAI requests and routed like any other; their
answers come back as Ollama's NDJSON stream (or one object with ``"stream": false``). Tags,
show, ps, pull and delete read the library, the model pool and the pull manager directly.
Pull and delete change the library, so they need the admin key.

Ollama's ``options.num_ctx`` is ignored (the context is a daemon setting). ``keep_alive`` sets
how long the model stays loaded after the request, as in Ollama; ``0`` unloads it before the
answer ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from localserve.api.errors import APIError, api_error_from
from localserve.asgi.disconnect import cancel_on_disconnect
from localserve.daemon.pool import ModelPool
from localserve.daemon.pulls import PullManager, PullState
from localserve.errors import BackendUnavailableError, ModelNotFoundError
from localserve.hub.library import ModelRecord
from localserve.protocols.ollama import (
    NDJSON,
    OLLAMA_API_VERSION,
    Timing,
    done_fields,
    model_name,
    ndjson,
    now_iso,
    ollama_tool_calls,
    openai_chat_messages,
    sampling,
    unloads_now,
)
from localserve.protocols.openai import StreamedToolCalls
from localserve.router.router import Router
from localserve.server.auth import Principal
from localserve.server.relay import BACKEND_HEADER
from localserve.server.request_body import read_json
from localserve.server.upstream import (
    ensure_ok,
    json_body,
    open_route,
    openai_chunks,
)


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


def ollama_routes(router: Router, pool: ModelPool, pulls: PullManager) -> APIRouter:
    api = APIRouter(prefix="/api")

    def require_admin(request: Request) -> None:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None or not principal.is_admin:
            raise APIError(403, "Pulling and deleting models needs the admin key.")

    async def keep_alive(payload: dict[str, Any], model: str) -> None:
        if unloads_now(payload) and pool.is_loaded(model):
            await pool.unload(model)

    async def answer(
        request: Request,
        payload: dict[str, Any],
        path: str,
        openai: dict[str, Any],
        shape: Callable[[str, list[dict[str, Any]]], dict[str, Any]],
        final: Callable[[str, list[dict[str, Any]], dict[str, Any]], dict[str, Any]],
    ) -> Response:
        """Send ``openai`` to ``path`` and answer in Ollama's shape: ``shape(piece, calls)``
        for each streamed piece (and once for the tool calls, when there are some),
        ``final(text, calls, done_fields)`` at the end."""
        model = model_name(payload)
        stream = payload.get("stream", True) is not False
        openai = {**openai, "model": model, "stream": stream}
        if payload.get("keep_alive") is not None:
            openai["keep_alive"] = payload["keep_alive"]
        if stream:
            openai["stream_options"] = {"include_usage": True}
        timing = Timing()

        async def respond() -> Response:
            backend, upstream = await open_route(router, path, openai)
            headers = {BACKEND_HEADER: backend.name}
            if not stream:
                reply = await json_body(upstream)
                await keep_alive(payload, model)
                choice = reply["choices"][0]
                message = choice.get("message") or {}
                text = message.get("content") or choice.get("text") or ""
                calls = ollama_tool_calls(message.get("tool_calls") or [])
                done = done_fields(choice.get("finish_reason"), timing, reply.get("usage"))
                return JSONResponse(final(text, calls, done), headers=headers)
            await ensure_ok(upstream)

            async def lines() -> AsyncIterator[bytes]:
                usage: dict[str, Any] = {}
                reason = None
                tool_calls = StreamedToolCalls()
                try:
                    async for chunk in openai_chunks(upstream):
                        for choice in chunk.get("choices") or []:
                            delta = choice.get("delta") or {}
                            piece = delta.get("content") or choice.get("text")
                            if piece:
                                timing.mark_first()
                                yield ndjson(shape(piece, []))
                            tool_calls.add(delta)
                            reason = choice.get("finish_reason") or reason
                        usage = chunk.get("usage") or usage
                except BackendUnavailableError as exc:
                    yield ndjson({"error": api_error_from(exc).message})
                    return
                await keep_alive(payload, model)
                calls = ollama_tool_calls(tool_calls.calls())
                if calls:  # Ollama sends the calls in a chunk of their own, before the last
                    yield ndjson(shape("", calls))
                yield ndjson(final("", [], done_fields(reason, timing, usage)))

            return StreamingResponse(lines(), media_type=NDJSON, headers=headers)

        return await cancel_on_disconnect(request, respond())

    @api.get("/version")
    async def version() -> dict[str, str]:
        return {"version": OLLAMA_API_VERSION}

    @api.get("/tags")
    async def tags() -> dict[str, Any]:
        records = await asyncio.to_thread(pool.library.records)
        return {
            "models": [
                {
                    "name": record.name,
                    "model": record.name,
                    "modified_at": datetime.fromtimestamp(record.added_at, timezone.utc)
                    .isoformat()
                    .replace("+00:00", "Z"),
                    "size": record.size_bytes,
                    "digest": digest(record),
                    "details": details(record),
                }
                for record in records
            ]
        }

    @api.post("/show")
    async def show(request: Request) -> dict[str, Any]:
        name = model_name(await read_json(request))
        record = pool.library.find(name)
        if record is None:
            raise ModelNotFoundError(name, pool.model_ids())
        capabilities = ["completion"] + (["insert"] if record.supports_fim else [])
        capabilities += ["tools"] if record.supports_tools else []
        return {
            "modelfile": f"# served by localserve from the GGUF file of {record.name}",
            "parameters": "",
            "template": "",
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

    @api.get("/ps")
    async def ps() -> dict[str, Any]:
        loaded = []
        for status in pool.status():
            record = pool.library.find(status.model_id)
            loaded.append(
                {
                    "name": status.model_id,
                    "model": status.model_id,
                    "size": record.size_bytes if record else 0,
                    "digest": digest(record) if record else "",
                    "details": details(record),
                    "expires_at": "2999-01-01T00:00:00Z",  # unloaded only when asked or evicted
                    "size_vram": 0
                    if not (status.info.get("gpu_layers"))
                    else (record.size_bytes if record else 0),
                }
            )
        return {"models": loaded}

    @api.post("/chat")
    async def chat(request: Request) -> Response:
        payload = await read_json(request)
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "messages must be a non-empty list")
        openai = {"messages": openai_chat_messages(messages), **sampling(payload)}
        if payload.get("tools"):
            openai["tools"] = payload["tools"]
        model = model_name(payload)

        def message(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "role": "assistant",
                "content": text,
                **({"tool_calls": calls} if calls else {}),
            }

        def shape(piece: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "model": model,
                "created_at": now_iso(),
                "message": message(piece, calls),
                "done": False,
            }

        def final(text: str, calls: list[dict[str, Any]], done: dict[str, Any]) -> dict[str, Any]:
            return {
                "model": model,
                "created_at": now_iso(),
                "message": message(text, calls),
                **done,
            }

        return await answer(request, payload, "/v1/chat/completions", openai, shape, final)

    @api.post("/generate")
    async def generate(request: Request) -> Response:
        payload = await read_json(request)
        model = model_name(payload)
        prompt = payload.get("prompt") or ""
        if not prompt and not payload.get("suffix"):
            # Ollama's way to load (or, with keep_alive 0, unload) a model.
            if unloads_now(payload):
                await pool.unload(model)
                reason = "unload"
            else:
                supervisor = await pool.load(model)
                await supervisor.ready(pool.start_timeout)
                reason = "load"
            return JSONResponse(
                {
                    "model": model,
                    "created_at": now_iso(),
                    "response": "",
                    "done": True,
                    "done_reason": reason,
                }
            )
        if payload.get("raw") or payload.get("suffix"):
            path = "/v1/completions"
            openai: dict[str, Any] = {"prompt": prompt, **sampling(payload)}
            if payload.get("suffix"):
                openai["suffix"] = payload["suffix"]
        else:
            path = "/v1/chat/completions"
            messages = [{"role": "user", "content": prompt}]
            if payload.get("system"):
                messages.insert(0, {"role": "system", "content": payload["system"]})
            openai = {"messages": messages, **sampling(payload)}

        def shape(piece: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
            return {"model": model, "created_at": now_iso(), "response": piece, "done": False}

        def final(text: str, calls: list[dict[str, Any]], done: dict[str, Any]) -> dict[str, Any]:
            return {
                "model": model,
                "created_at": now_iso(),
                "response": text,
                **done,
                "context": [],
            }

        return await answer(request, payload, path, openai, shape, final)

    @api.post("/embed")
    async def embed(request: Request) -> Response:
        payload = await read_json(request)
        model = model_name(payload)
        inputs = payload.get("input")
        if not isinstance(inputs, (str, list)) or not inputs:
            raise APIError(400, "input must be a string or a non-empty list of strings")
        timing = Timing()

        async def respond() -> Response:
            request_body = {"model": model, "input": inputs}
            if payload.get("keep_alive") is not None:
                request_body["keep_alive"] = payload["keep_alive"]
            backend, upstream = await open_route(router, "/v1/embeddings", request_body)
            reply = await json_body(upstream)
            await keep_alive(payload, model)
            usage = reply.get("usage") or {}
            return JSONResponse(
                {
                    "model": model,
                    "embeddings": [item["embedding"] for item in reply["data"]],
                    **{
                        k: v
                        for k, v in timing.fields(usage).items()
                        if k in ("total_duration", "load_duration", "prompt_eval_count")
                    },
                },
                headers={BACKEND_HEADER: backend.name},
            )

        return await cancel_on_disconnect(request, respond())

    @api.post("/pull")
    async def pull(request: Request) -> Response:
        require_admin(request)
        payload = await read_json(request)
        spec = model_name(payload).removeprefix("hf.co/").removeprefix("huggingface.co/")
        job, _ = await pulls.start(spec)
        stream = payload.get("stream", True) is not False

        async def events() -> AsyncIterator[dict[str, Any]]:
            yield {"status": "pulling manifest"}
            last: dict[str, Any] = {}
            async for snapshot in pulls.watch(job):
                last = snapshot
                if snapshot["state"] == PullState.WAITING.value:
                    yield {"status": f"waiting for network: {snapshot['waiting_reason']}"}
                elif snapshot["state"] == PullState.RUNNING.value:
                    yield {
                        "status": f"pulling {snapshot['files'][0]}",
                        "digest": snapshot["files"][0],
                        "total": snapshot["total_bytes"],
                        "completed": snapshot["done_bytes"],
                    }
            if last.get("state") == PullState.DONE.value:
                file = last["files"][0]
                total = last["total_bytes"]
                yield {
                    "status": f"pulling {file}",
                    "digest": file,
                    "total": total,
                    "completed": total,
                }
                yield {"status": "verifying sha256 digest"}
                yield {"status": "writing manifest"}
                yield {"status": "success"}
            else:
                yield {"error": last.get("error") or "the download did not finish"}

        if not stream:
            outcome = [event async for event in events()][-1]
            if outcome.get("status") == "success":
                return JSONResponse(outcome)
            if job.failure is not None:
                status = api_error_from(job.failure).status_code
            else:  # cancelled from elsewhere (409), or a bug (500, logged by the pull)
                status = 409 if job.state is PullState.CANCELLED else 500
            return JSONResponse(outcome, status_code=status)

        async def lines() -> AsyncIterator[bytes]:
            async for event in events():
                yield (json.dumps(event) + "\n").encode()

        return StreamingResponse(lines(), media_type=NDJSON)

    @api.delete("/delete")
    async def delete(request: Request) -> Response:
        require_admin(request)
        await pool.remove(model_name(await read_json(request)))
        return Response(status_code=200)

    return api
