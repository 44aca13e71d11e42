"""The control API under ``/localserve/v1`` (admin key): the daemon's status and live stats, the
model library, loading and unloading models, and downloads that outlive the client that started
them; plus ``/metrics`` for Prometheus (admin key too).

The tray and the CLI are both thin clients of these routes, so there is one implementation of
each operation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from localserve.api.errors import APIError
from localserve.api.sse import sse_data
from localserve.daemon.pool import ModelPool
from localserve.daemon.pulls import PullJob, PullManager
from localserve.daemon.remote import RemoteAccess
from localserve.daemon.telemetry import Telemetry
from localserve.errors import ModelNotFoundError
from localserve.hardware.memory import MemorySnapshot, sample_memory
from localserve.hub.catalog import search_repos
from localserve.hub.fit import FitEstimate, estimate_fit
from localserve.hub.library import ModelRecord
from localserve.hub.quants import QuantChoice, quant_choices
from localserve.server.metrics import prometheus_text

PREFIX = "/localserve/v1"
StatusProvider = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class ForwardingPolicy:
    """Switches that decide whether requests may leave this machine (changed at run time)."""

    local_only: bool = False


class LocalOnlyRequest(BaseModel):
    enabled: bool


class RemoteRequest(BaseModel):
    enabled: bool
    interface: str | None = Field(None, description="Address or interface name.")
    port: int | None = Field(None, ge=0, le=65535)


class PullRequest(BaseModel):
    model: str = Field(description="OWNER/REPO[:QUANT|:FILE]")
    name: str | None = Field(None, description="Name in the library (default: from the file).")


def model_json(
    record: ModelRecord,
    memory: MemorySnapshot,
    states: dict[str, str],
    default: str,
    gpu_offload: bool,
) -> dict[str, Any]:
    """A library model for the control API; ``states`` maps loaded model ids to their state."""
    fit = estimate_fit(record, memory, None, 1, gpu_offload)
    return {
        "name": record.name,
        "size_bytes": record.size_bytes,
        "architecture": record.architecture,
        "parameter_count": record.parameter_count,
        "quant_type": record.quant_type,
        "context_length": record.context_length,
        "has_chat_template": record.has_chat_template,
        "supports_fim": record.supports_fim,
        "source_repo": record.source_repo,
        "default": record.name == default,
        "state": states.get(record.name, "unloaded"),
        "fit": fit_json(fit),
    }


def fit_json(fit: FitEstimate) -> dict[str, Any]:
    return {
        "verdict": fit.verdict.value,
        "description": fit.describe(),
        "total_bytes": fit.total_bytes,
        "gpu_layers": fit.gpu_layers,
        "context_length": fit.context_length,
    }


def quant_json(choice: QuantChoice) -> dict[str, Any]:
    model = choice.model
    return {
        "repo_id": model.repo_id,
        "quant": model.quant,
        "files": [f.name for f in model.files],
        "size_bytes": model.size,
        "fit": fit_json(choice.fit) if choice.fit else None,
        "fit_problem": choice.problem,
    }


def sse_events(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        async for event in events:
            yield sse_data(event)

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


def control_routes(
    pool: ModelPool,
    pulls: PullManager,
    telemetry: Telemetry,
    policy: ForwardingPolicy,
    status: StatusProvider,
    remote: RemoteAccess,
) -> APIRouter:
    api = APIRouter(prefix=PREFIX)

    def find_pull(pull_id: str) -> PullJob:
        job = pulls.get(pull_id)
        if job is None:
            raise APIError(404, f"No pull with id '{pull_id}'.", code="pull_not_found")
        return job

    @api.get("/status")
    async def daemon_status() -> dict[str, Any]:
        return await status()

    @api.post("/local-only")
    async def set_local_only(body: LocalOnlyRequest) -> dict[str, Any]:
        """Forbid (or allow again) forwarding to cloud providers, from the next request on."""
        policy.local_only = body.enabled
        return {"local_only": policy.local_only}

    @api.get("/remote")
    async def remote_status() -> dict[str, Any]:
        return remote.to_json()

    @api.post("/remote")
    async def switch_remote(body: RemoteRequest) -> dict[str, Any]:
        """Turn remote access on (TLS listener) or off (listener closed, connections cut)."""
        if body.enabled:
            await remote.enable(body.interface, body.port)
        else:
            await remote.disable()
        return remote.to_json()

    # -- telemetry ---------------------------------------------------------------------------
    @api.get("/stats")
    async def stats(history: bool = False) -> dict[str, Any]:
        return telemetry.snapshot(history=history)

    @api.get("/stats/events")
    async def stats_events(interval: float = 1.0) -> Response:
        period = min(max(interval, 0.2), 60.0)

        async def snapshots() -> AsyncIterator[dict[str, Any]]:
            while True:
                yield telemetry.snapshot()
                await asyncio.sleep(period)

        return sse_events(snapshots())

    # -- models ------------------------------------------------------------------------------
    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        def read() -> list[dict[str, Any]]:
            memory = sample_memory()
            states = {status.model_id: status.state.value for status in pool.status()}
            default = pool.default.model_id
            offload = pool.gpu_offload
            return [model_json(r, memory, states, default, offload) for r in pool.library.records()]

        return {"object": "list", "data": await asyncio.to_thread(read)}

    @api.delete("/models/{name}")
    async def remove_model(name: str) -> dict[str, Any]:
        return {"removed": (await pool.remove(name)).name}

    @api.post("/models/{name}/load")
    async def load_model(name: str, wait: bool = True) -> dict[str, Any]:
        supervisor = await pool.load(name)
        if wait:
            await supervisor.ready(pool.start_timeout)
        return asdict(supervisor.status())

    @api.post("/models/{name}/unload")
    async def unload_model(name: str) -> dict[str, Any]:
        if pool.resolve(name) is None:
            raise ModelNotFoundError(name, pool.model_ids())
        return {"model": name, "unloaded": await pool.unload(name)}

    # -- the Hub -----------------------------------------------------------------------------
    @api.get("/hub/search")
    async def hub_search(q: str, limit: int = 20) -> dict[str, Any]:
        found = await asyncio.to_thread(
            search_repos, q, max(1, min(limit, 100)), pulls.hub.timeout_s
        )
        return {
            "object": "list",
            "data": [
                {
                    "repo_id": repo.repo_id,
                    "downloads": repo.downloads,
                    "likes": repo.likes,
                    "updated": repo.updated.isoformat() if repo.updated else None,
                }
                for repo in found
            ],
        }

    @api.get("/hub/files")
    async def hub_files(repo: str, ctx: int | None = None) -> dict[str, Any]:
        def read() -> list[QuantChoice]:
            memory, offload = sample_memory(), pool.gpu_offload
            return quant_choices(repo, memory, offload, ctx, pulls.hub.timeout_s)

        return {"object": "list", "data": [quant_json(c) for c in await asyncio.to_thread(read)]}

    # -- pulls -------------------------------------------------------------------------------
    @api.post("/pulls", status_code=202)
    async def start_pull(body: PullRequest) -> dict[str, Any]:
        job, joined = await pulls.start(body.model, body.name)
        return {**job.to_json(), "joined": joined}

    @api.get("/pulls")
    async def list_pulls() -> dict[str, Any]:
        return {"object": "list", "data": [job.to_json() for job in pulls.jobs()]}

    @api.get("/pulls/{pull_id}")
    async def get_pull(pull_id: str) -> dict[str, Any]:
        return find_pull(pull_id).to_json()

    @api.get("/pulls/{pull_id}/events")
    async def watch_pull(pull_id: str) -> Response:
        return sse_events(pulls.watch(find_pull(pull_id)))

    @api.delete("/pulls/{pull_id}")
    async def cancel_pull(pull_id: str) -> dict[str, Any]:
        job = find_pull(pull_id)
        pulls.cancel(job)
        return job.to_json()

    routes = APIRouter()
    routes.include_router(api)

    @routes.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(
            prometheus_text(telemetry.snapshot()), media_type="text/plain; version=0.0.4"
        )

    return routes
