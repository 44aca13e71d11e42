"""The control API in-process: its routes over fakes of the daemon's pool, pulls and remote
access (they meet the routes' protocols as the daemon's objects do), the JSON they answer, and
``DaemonClient`` reading every answer as its ``api/control.py`` model. No daemon, no model."""

from __future__ import annotations

import time
import typing
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from localserve.api import control
from localserve.api.control import (
    DaemonStatus,
    EngineBuild,
    LibraryModel,
    ModelStatus,
    PullSnapshot,
    PullState,
    RemoteStatus,
    RunnerInfo,
    StatsSnapshot,
)
from localserve.api.runner import RunnerEndpoint
from localserve.daemon.client import DaemonClient
from localserve.daemon.pulls import PullJob
from localserve.daemon.state import DaemonState
from localserve.daemon.telemetry import Telemetry
from localserve.errors import LocalserveError
from localserve.hub.client import HubOptions
from localserve.hub.fit import Verdict
from localserve.hub.library import ModelRecord
from localserve.hub.resolve import ResolvedModel
from localserve.server.errors import install_error_handlers
from localserve.server.routes.control import ForwardingPolicy, control_routes, model_status
from tests.helpers.fake_backend import library_record

STARTER = "starter"
INFO: dict[str, Any] = {
    "model_id": STARTER,
    "n_ctx": 4096,
    "n_ctx_train": 8192,
    "n_params": 135_000_000,
    "size_bytes": 100_000_000,
    "description": "llama 135M Q4_0",
    "supports_fim": False,
    "has_chat_template": True,
    "tool_syntax": None,
    "thinking_syntax": None,
    "vision": False,
    "kv_cells": 0,
    "kv_bytes_per_cell": 0,
    "gpu_layers": 0,
    "gpu_offload_supported": False,
    "threads": 4,
    "parallel": 2,
    "rss_before_load_bytes": 50_000_000,
    "backend": "CPU",
    "cpu_variant": None,
    "extra_buffers": True,
    "engine_note": "llama.cpp's defaults (no engine check)",
}


def record(name: str) -> ModelRecord:
    return library_record(
        name, context_length=8192, quant_type="Q4_0", source_repo="example/Starter-GGUF"
    )


# -- fakes of the daemon's objects -------------------------------------------------------------
@dataclass
class FakeStatus:
    model_id: str
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeRunner:
    current: FakeStatus

    async def ready(self, timeout: float) -> RunnerEndpoint:
        self.current.state, self.current.pid, self.current.info = "ready", 4242, dict(INFO)
        return RunnerEndpoint("http://127.0.0.1:1", "token", self.current.info, 4242)

    def status(self) -> FakeStatus:
        return self.current


class FakeLibrary:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def records(self) -> list[ModelRecord]:
        return [record(name) for name in self.names]


class FakePool:
    gpu_offload = False
    start_timeout = 5.0

    def __init__(self) -> None:
        self.library = FakeLibrary([STARTER, "other"])
        self.default = ResolvedModel(STARTER, Path("starter.gguf"))
        self.runners = {STARTER: FakeRunner(FakeStatus(STARTER))}

    def model_ids(self) -> list[str]:
        return self.library.names

    def resolve(self, model_id: str) -> ResolvedModel | None:
        known = model_id in self.library.names
        return ResolvedModel(model_id, Path(f"{model_id}.gguf")) if known else None

    def status(self) -> list[FakeStatus]:
        return [runner.status() for runner in self.runners.values()]

    async def load(self, model_id: str) -> FakeRunner:
        return self.runners.setdefault(model_id, FakeRunner(FakeStatus(model_id)))

    async def unload(self, model_id: str) -> bool:
        return self.runners.pop(model_id, None) is not None

    async def remove(self, model_id: str) -> ModelRecord:
        await self.unload(model_id)
        self.library.names.remove(model_id)
        return record(model_id)


class FakePulls:
    hub = HubOptions()

    def __init__(self) -> None:
        self.started: dict[str, PullJob] = {}

    async def start(self, spec: str, name: str | None = None) -> tuple[PullJob, bool]:
        for job in self.started.values():
            if job.repo_id == spec and not job.finished:
                return job, True
        job = PullJob(f"job{len(self.started)}", spec, ["m.Q4_0.gguf"], name, 98_362_432)
        self.started[job.id] = job
        return job, False

    def jobs(self) -> list[PullJob]:
        return list(self.started.values())

    def get(self, job_id: str) -> PullJob | None:
        return self.started.get(job_id)

    def cancel(self, job: PullJob) -> None:
        job.state, job.finished_at = PullState.CANCELLED, time.time()

    async def follow(self, job: PullJob) -> AsyncIterator[PullSnapshot]:
        job.done_bytes = job.total_bytes // 2
        yield job.snapshot()
        job.state, job.model, job.done_bytes = PullState.DONE, "m", job.total_bytes
        yield job.snapshot()


class FakeRemote:
    def __init__(self) -> None:
        self.current = RemoteStatus(enabled=False)

    def status(self) -> RemoteStatus:
        return self.current

    async def enable(self, interface: str | None, port: int | None) -> RemoteStatus:
        self.current = RemoteStatus(
            enabled=True,
            url=f"https://192.0.2.7:{port or 11436}/v1",
            address="192.0.2.7",
            port=port or 11436,
            fingerprint="AB:CD",
            self_signed=True,
            cert_file="/tmp/cert.pem",
        )
        return self.current

    async def disable(self) -> RemoteStatus:
        self.current = RemoteStatus(enabled=False)
        return self.current


@dataclass
class Control:
    http: TestClient
    pool: FakePool

    def client(self) -> DaemonClient:
        """A ``DaemonClient`` whose requests reach the routes in-process."""

        def forward(request: httpx.Request) -> httpx.Response:
            answer = self.http.request(
                request.method,
                request.url.raw_path.decode(),
                content=request.content,
                headers={"content-type": request.headers.get("content-type", "")},
            )
            return httpx.Response(answer.status_code, content=answer.content)

        state = DaemonState(1, "127.0.0.1", 1, STARTER, "test", time.time())
        return DaemonClient(state, "admin-key", transport=httpx.MockTransport(forward))


@pytest.fixture
def control_api() -> Iterator[Control]:
    pool, remote, policy = FakePool(), FakeRemote(), ForwardingPolicy()
    telemetry = Telemetry(lambda: 0, lambda: {})
    telemetry.on_runner_event(
        STARTER,
        {"event": "request", "prompt_tokens": 9, "completion_tokens": 3, "ttft_s": 0.05},
    )
    telemetry.sample()

    async def status() -> DaemonStatus:
        return DaemonStatus(
            version="test",
            pid=1,
            url="http://127.0.0.1:1",
            default_model=STARTER,
            max_loaded_models=2,
            local_only=policy.local_only,
            providers=[],
            remote=remote.status(),
            engine=EngineBuild(build="native", cpu_variants=[], gpu_backends=[], gpu_offload=False),
            models=[model_status(s) for s in pool.status()],
        )

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(control_routes(pool, FakePulls(), telemetry, policy, status, remote))
    with TestClient(app) as http:
        yield Control(http, pool)


def test_the_json_keeps_its_shape(control_api: Control) -> None:
    http = control_api.http
    status = http.get("/localserve/v1/status").json()
    assert list(status) == [
        "version",
        "pid",
        "url",
        "default_model",
        "max_loaded_models",
        "local_only",
        "providers",
        "remote",
        "engine",
        "models",
    ]
    # A runner not ready yet has no info: {} on the wire, as before the models.
    assert status["models"] == [
        {
            "model_id": STARTER,
            "state": "starting",
            "restarts": 0,
            "last_error": None,
            "pid": None,
            "info": {},
        }
    ]
    assert status["remote"] == {
        "enabled": False,
        **dict.fromkeys(list(RemoteStatus.model_fields)[1:]),
    }
    loaded = http.post(f"/localserve/v1/models/{STARTER}/load").json()
    assert loaded["state"] == "ready" and loaded["info"] == INFO

    stats = http.get("/localserve/v1/stats").json()
    assert "history" not in stats  # only when asked for
    assert list(stats["totals"]) == ["requests", "prompt_tokens", "completion_tokens", "by_model"]
    assert stats["last_request"]["prompt_tokens"] == 9
    assert len(http.get("/localserve/v1/stats", params={"history": "true"}).json()["history"]) == 1

    models = http.get("/localserve/v1/models").json()
    assert models["object"] == "list"
    assert [(m["name"], m["state"], m["default"]) for m in models["data"]] == [
        (STARTER, "ready", True),
        ("other", "unloaded", False),
    ]

    started = http.post("/localserve/v1/pulls", json={"model": "example/Repo-GGUF"})
    assert started.status_code == 202
    assert list(started.json())[-1] == "joined" and started.json()["state"] == "running"
    assert http.get("/localserve/v1/pulls").json()["data"][0]["id"] == started.json()["id"]
    missing = http.get("/localserve/v1/pulls/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "pull_not_found"
    assert "localserve_prompt_tokens_total" in http.get("/metrics").text


def test_the_client_reads_every_answer_as_its_model(control_api: Control) -> None:
    with control_api.client() as client:
        status = client.status()
        assert isinstance(status, DaemonStatus) and status.engine.build == "native"
        starter = status.model(STARTER)
        assert starter is not None and starter.state == "starting" and starter.info is None

        loaded = client.load_model(STARTER)
        assert isinstance(loaded.info, RunnerInfo) and loaded.info.n_ctx == 4096
        assert client.load_model("other", wait=False).state == "starting"
        assert client.unload_model("other").unloaded is True
        assert client.unload_model("other").unloaded is False

        models = client.models()
        assert all(isinstance(m, LibraryModel) for m in models)
        assert {m.name: m.fit.verdict for m in models}.keys() == {STARTER, "other"}
        assert client.remove_model("other").removed == "other"

        stats = client.stats(history=True)
        assert isinstance(stats, StatsSnapshot) and stats.history is not None
        assert stats.totals.by_model[STARTER].prompt_tokens == 9
        assert stats.last_request is not None and stats.last_request.ttft_s == 0.05
        assert client.stats().history is None

        started = client.start_pull("example/Repo-GGUF", name="repo")
        assert started.joined is False and started.state is PullState.RUNNING and started.active
        assert client.start_pull("example/Repo-GGUF").joined is True
        assert [job.id for job in client.pulls()] == [started.id]
        events = list(client.pull_events(started.id))
        assert [e.state for e in events] == [PullState.RUNNING, PullState.DONE]
        assert events[-1].done_bytes == events[-1].total_bytes and events[-1].model == "m"
        assert client.pull(started.id).state is PullState.DONE
        assert client.cancel_pull(started.id).state is PullState.CANCELLED

        assert client.set_local_only(True).local_only is True
        assert client.status().local_only is True
        assert client.remote().enabled is False
        remote = client.set_remote(True, port=12000)
        assert remote.enabled and remote.port == 12000 and remote.fingerprint == "AB:CD"
        assert client.set_remote(False) == RemoteStatus(enabled=False)

        with pytest.raises(LocalserveError, match="No pull with id"):
            client.pull("nope")


def test_an_answer_of_another_shape_is_one_readable_error() -> None:
    from localserve.daemon.client import parse

    with pytest.raises(LocalserveError, match=r"unexpected shape \(DaemonStatus, pid"):
        parse(DaemonStatus, b'{"version": "1", "pid": "not a number"}')


def test_the_models_follow_the_types_they_describe() -> None:
    """Drift between the answers and what fills them fails here, not in a client."""
    assert set(typing.get_args(control.FitVerdictName)) == {v.value for v in Verdict}
    job = PullJob("id", "example/Repo-GGUF", ["m.gguf"], None, 10)
    assert job.snapshot().model_dump(mode="json")["state"] == "running"
    assert ModelStatus.model_validate({"model_id": "m", "state": "ready", "info": {}}).info is None
