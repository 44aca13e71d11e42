"""The control API under ``/localserve/v1`` (admin key): the daemon's status and live stats, the
model library, loading and unloading models, and downloads that outlive the client that started
them; plus ``/metrics`` for Prometheus (admin key too).

The tray and the CLI are both thin clients of these routes, so there is one implementation of
each operation. Every answer is a model of ``api/control.py``. The routes need little of the
daemon and say so in ``server/ports.py`` (``ModelControl``, ``PullControl``, ``StatsSource``,
``RemoteSwitch``), which the daemon's pool, pull manager, telemetry and remote access meet as
they are: the server never imports the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Generic

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from localserve.api.control import (
    DaemonStatus,
    FitSummary,
    HubQuant,
    HubQuantList,
    HubRepo,
    HubRepoList,
    LibraryModel,
    LocalOnlyStatus,
    ModelList,
    ModelSettings,
    ModelStatus,
    PullList,
    PullSnapshot,
    RemoteStatus,
    RemovedModel,
    StartedPull,
    StatsSnapshot,
    UnloadResult,
)
from localserve.api.errors import APIError
from localserve.api.presets import ModelPreset, fit_inputs
from localserve.api.sse import sse_data
from localserve.config.preset_store import PresetStore
from localserve.errors import ConfigError, ModelNotFoundError
from localserve.hardware.memory import MemorySnapshot, sample_memory
from localserve.hub.catalog import RepoSummary, search_repos
from localserve.hub.fit import FitEstimate, estimate_fit
from localserve.hub.library import ModelRecord
from localserve.hub.quants import QuantChoice, quant_choices
from localserve.server.metrics import prometheus_text
from localserve.server.ports import (
    ForwardingPolicy,
    JobT,
    ModelControl,
    PullControl,
    RemoteSwitch,
    RunnerStatus,
    StatsSource,
    StatusProvider,
)

PREFIX = "/localserve/v1"
__all__ = ["PREFIX", "ForwardingPolicy", "control_routes", "model_status"]


# -- requests and answers --------------------------------------------------------------------
class LocalOnlyRequest(BaseModel):
    enabled: bool


class RemoteRequest(BaseModel):
    enabled: bool
    interface: str | None = Field(None, description="Address or interface name.")
    port: int | None = Field(None, ge=0, le=65535)


class PullRequest(BaseModel):
    model: str = Field(description="OWNER/REPO[:QUANT|:FILE]")
    name: str | None = Field(None, description="Name in the library (default: from the file).")


def model_status(status: RunnerStatus) -> ModelStatus:
    return ModelStatus.model_validate(status, from_attributes=True)


def fit_summary(fit: FitEstimate) -> FitSummary:
    return FitSummary(
        verdict=fit.verdict.value,
        description=fit.describe(),
        total_bytes=fit.total_bytes,
        gpu_layers=fit.gpu_layers,
        context_length=fit.context_length,
    )


def library_model(
    record: ModelRecord,
    memory: MemorySnapshot,
    states: dict[str, str],
    default: str,
    gpu_offload: bool,
    preset: ModelPreset | None = None,
) -> LibraryModel:
    """A library model for the control API; ``states`` maps loaded model ids to their state.
    The fit verdict uses the model's own context and KV-cache types (``preset``)."""
    ctx, kv_scale = fit_inputs(preset)
    fit = estimate_fit(record, memory, ctx, 1, gpu_offload, kv_scale)
    return LibraryModel(
        name=record.name,
        size_bytes=record.size_bytes,
        architecture=record.architecture,
        parameter_count=record.parameter_count,
        quant_type=record.quant_type,
        context_length=record.context_length,
        has_chat_template=record.has_chat_template,
        supports_fim=record.supports_fim,
        capabilities=record.capabilities(),
        source_repo=record.source_repo,
        default=record.name == default,
        state=states.get(record.name, "unloaded"),
        fit=fit_summary(fit),
    )


def hub_repo(repo: RepoSummary) -> HubRepo:
    return HubRepo(
        repo_id=repo.repo_id,
        downloads=repo.downloads,
        likes=repo.likes,
        updated=repo.updated.isoformat() if repo.updated else None,
    )


def hub_quant(choice: QuantChoice) -> HubQuant:
    model = choice.model
    return HubQuant(
        repo_id=model.repo_id,
        quant=model.quant,
        files=[f.name for f in model.files],
        size_bytes=model.size,
        fit=fit_summary(choice.fit) if choice.fit else None,
        fit_problem=choice.problem,
    )


def sse_events(events: AsyncIterator[BaseModel]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        async for event in events:
            yield sse_data(event.model_dump(mode="json"))

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


class ControlAPI(Generic[JobT]):
    """The control API's endpoints; each method is one route."""

    def __init__(
        self,
        pool: ModelControl,
        pulls: PullControl[JobT],
        telemetry: StatsSource,
        policy: ForwardingPolicy,
        status: StatusProvider,
        remote: RemoteSwitch,
        presets: PresetStore | None = None,
    ) -> None:
        self.presets = presets or PresetStore(None)
        self.pool = pool
        self.pulls = pulls
        self.telemetry = telemetry
        self.policy = policy
        self.status = status
        self.remote = remote

    def routes(self) -> APIRouter:
        api = APIRouter(prefix=PREFIX)
        get, post, delete = ["GET"], ["POST"], ["DELETE"]
        api.add_api_route("/status", self.daemon_status, methods=get)
        api.add_api_route("/local-only", self.set_local_only, methods=post)
        api.add_api_route("/remote", self.remote_status, methods=get)
        api.add_api_route("/remote", self.switch_remote, methods=post)
        api.add_api_route("/stats", self.stats, methods=get)
        api.add_api_route("/stats/events", self.stats_events, methods=get)
        api.add_api_route("/models", self.list_models, methods=get)
        api.add_api_route("/models/{name}", self.remove_model, methods=delete)
        api.add_api_route("/models/{name}/load", self.load_model, methods=post)
        api.add_api_route("/models/{name}/unload", self.unload_model, methods=post)
        api.add_api_route("/models/{name}/preset", self.model_preset, methods=get)
        api.add_api_route("/models/{name}/preset", self.change_preset, methods=["PUT"])
        api.add_api_route("/hub/search", self.hub_search, methods=get)
        api.add_api_route("/hub/files", self.hub_files, methods=get)
        api.add_api_route("/pulls", self.start_pull, methods=post, status_code=202)
        api.add_api_route("/pulls", self.list_pulls, methods=get)
        api.add_api_route("/pulls/{pull_id}", self.get_pull, methods=get)
        api.add_api_route("/pulls/{pull_id}/events", self.watch_pull, methods=get)
        api.add_api_route("/pulls/{pull_id}", self.cancel_pull, methods=delete)
        routes = APIRouter()
        routes.include_router(api)
        routes.add_api_route("/metrics", self.metrics, methods=get)
        return routes

    def find_pull(self, pull_id: str) -> JobT:
        job = self.pulls.get(pull_id)
        if job is None:
            raise APIError(404, f"No pull with id '{pull_id}'.", code="pull_not_found")
        return job

    async def daemon_status(self) -> DaemonStatus:
        return await self.status()

    async def set_local_only(self, body: LocalOnlyRequest) -> LocalOnlyStatus:
        """Forbid (or allow again) forwarding to cloud providers, from the next request on."""
        self.policy.local_only = body.enabled
        return LocalOnlyStatus(local_only=self.policy.local_only)

    async def remote_status(self) -> RemoteStatus:
        return self.remote.status()

    async def switch_remote(self, body: RemoteRequest) -> RemoteStatus:
        """Turn remote access on (TLS listener) or off (listener closed, connections cut)."""
        if body.enabled:
            return await self.remote.enable(body.interface, body.port)
        return await self.remote.disable()

    # -- telemetry ---------------------------------------------------------------------------
    async def stats(self, history: bool = False) -> StatsSnapshot:
        return self.telemetry.snapshot(history=history)

    async def stats_events(self, interval: float = 1.0) -> Response:
        period = min(max(interval, 0.2), 60.0)

        async def snapshots() -> AsyncIterator[StatsSnapshot]:
            while True:
                yield self.telemetry.snapshot()
                await asyncio.sleep(period)

        return sse_events(snapshots())

    async def metrics(self) -> Response:
        return PlainTextResponse(
            prometheus_text(self.telemetry.snapshot()), media_type="text/plain; version=0.0.4"
        )

    # -- models ------------------------------------------------------------------------------
    def library_models(self) -> list[LibraryModel]:
        memory = sample_memory()
        states = {status.model_id: status.state for status in self.pool.status()}
        default, offload = self.pool.default.model_id, self.pool.gpu_offload
        return [
            library_model(record, memory, states, default, offload, self.presets.get(record.name))
            for record in self.pool.library.records()
        ]

    async def list_models(self) -> ModelList:
        return ModelList(data=await asyncio.to_thread(self.library_models))

    async def remove_model(self, name: str) -> RemovedModel:
        return RemovedModel(removed=(await self.pool.remove(name)).name)

    async def load_model(self, name: str, wait: bool = True) -> ModelStatus:
        runner = await self.pool.load(name)
        if wait:
            await runner.ready(self.pool.start_timeout)
        return model_status(runner.status())

    async def unload_model(self, name: str) -> UnloadResult:
        if self.pool.resolve(name) is None:
            raise ModelNotFoundError(name, self.pool.model_ids())
        return UnloadResult(model=name, unloaded=await self.pool.unload(name))

    async def model_preset(self, name: str) -> ModelSettings:
        model = self._known(name)
        preset = self.presets.get(model)
        return ModelSettings(model=model, values=preset.values() if preset else {})

    async def change_preset(self, name: str, body: PresetChange) -> ModelSettings:
        """Set or remove (null) keys of a model's preset, written to config.toml."""
        model = self._known(name)
        try:
            preset, changed = await asyncio.to_thread(self.presets.update, model, body.values)
        except ConfigError as exc:
            raise APIError(400, str(exc), param="values") from exc
        reloads = self.pool.preset_changed(model, changed)
        applies = (
            "It reloads with them once idle (the next request loads it again)."
            if reloads
            else "The next load and the next request use them."
        )
        return ModelSettings(
            model=model, values=preset.values(), changed=sorted(changed), applies=applies
        )

    def _known(self, name: str) -> str:
        resolved = self.pool.resolve(name)
        if resolved is None:
            raise ModelNotFoundError(name, self.pool.model_ids())
        return resolved.model_id

    # -- the Hub -----------------------------------------------------------------------------
    async def hub_search(self, q: str, limit: int = 20) -> HubRepoList:
        timeout = self.pulls.hub.timeout_s
        found = await asyncio.to_thread(search_repos, q, max(1, min(limit, 100)), timeout)
        return HubRepoList(data=[hub_repo(repo) for repo in found])

    async def hub_files(self, repo: str, ctx: int | None = None) -> HubQuantList:
        def read() -> list[QuantChoice]:
            memory, offload = sample_memory(), self.pool.gpu_offload
            return quant_choices(repo, memory, offload, ctx, self.pulls.hub.timeout_s)

        return HubQuantList(data=[hub_quant(c) for c in await asyncio.to_thread(read)])

    # -- pulls -------------------------------------------------------------------------------
    async def start_pull(self, body: PullRequest) -> StartedPull:
        job, joined = await self.pulls.start(body.model, body.name)
        return StartedPull(**job.snapshot().model_dump(), joined=joined)

    async def list_pulls(self) -> PullList:
        return PullList(data=[job.snapshot() for job in self.pulls.jobs()])

    async def get_pull(self, pull_id: str) -> PullSnapshot:
        return self.find_pull(pull_id).snapshot()

    async def watch_pull(self, pull_id: str) -> Response:
        return sse_events(self.pulls.follow(self.find_pull(pull_id)))

    async def cancel_pull(self, pull_id: str) -> PullSnapshot:
        job = self.find_pull(pull_id)
        self.pulls.cancel(job)
        return job.snapshot()


def control_routes(
    pool: ModelControl,
    pulls: PullControl[JobT],
    telemetry: StatsSource,
    policy: ForwardingPolicy,
    status: StatusProvider,
    remote: RemoteSwitch,
    presets: PresetStore | None = None,
) -> APIRouter:
    return ControlAPI(pool, pulls, telemetry, policy, status, remote, presets).routes()


class PresetChange(BaseModel):
    """The body of ``PUT /models/{name}/preset``: keys to set, or to remove with null."""

    values: dict[str, Any]
