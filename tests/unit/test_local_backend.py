"""The local backend against a pool of its own making (``RunnerPool`` is all it needs): what it
sends a runner, and that every runner it takes goes back, whatever happens. In-process, in
milliseconds: the runner is an ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx
import pytest

from localserve.api.runner import RunnerEndpoint
from localserve.errors import BackendUnavailableError, InvalidRequestError
from localserve.router.local import LocalBackend

ENDPOINT = RunnerEndpoint("http://runner.test", "runner-token", {}, 1234)


@dataclass
class FakeRunner:
    lost: list[RunnerEndpoint] = field(default_factory=list)

    async def ready(self, timeout: float) -> RunnerEndpoint:
        return ENDPOINT

    def runner_lost(self, endpoint: RunnerEndpoint) -> None:
        self.lost.append(endpoint)


@dataclass
class FakePool:
    runner: FakeRunner = field(default_factory=FakeRunner)
    acquired: list[tuple[str, float | None]] = field(default_factory=list)
    released: int = 0

    def model_ids(self) -> list[str]:
        return ["tiny", "other"]

    def capabilities(self, model_id: str) -> list[str]:
        return ["completion", "thinking"] if model_id == "tiny" else ["completion"]

    def serves(self, model_id: str) -> bool:
        return model_id in self.model_ids()

    async def acquire(self, model_id: str, keep_alive: float | None = None) -> FakeRunner:
        self.acquired.append((model_id, keep_alive))
        return self.runner

    def release(self, runner: FakeRunner) -> None:
        assert runner is self.runner
        self.released += 1


def backend(pool: FakePool, handler: httpx.MockTransport) -> LocalBackend[FakeRunner]:
    return LocalBackend(pool, httpx.AsyncClient(transport=handler), ready_timeout=1.0)


def test_a_request_reaches_its_runner_with_the_token_and_without_keep_alive() -> None:
    seen: list[httpx.Request] = []

    def runner(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async def scenario() -> None:
        pool = FakePool()
        local = backend(pool, httpx.MockTransport(runner))
        upstream = await local.send("/v1/chat/completions", {"model": "tiny", "keep_alive": "5m"})
        assert json.loads(await upstream.aread()) == {"ok": True}
        assert pool.released == 0  # held until the answer is closed
        await upstream.aclose()
        assert pool.acquired == [("tiny", 300.0)] and pool.released == 1

    asyncio.run(scenario())
    assert str(seen[0].url) == "http://runner.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer runner-token"
    assert json.loads(seen[0].content) == {"model": "tiny"}  # keep_alive is ours, not the runner's


def test_a_runner_that_cannot_be_reached_is_reported_lost_and_released() -> None:
    def gone(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def scenario() -> FakePool:
        pool = FakePool()
        with pytest.raises(BackendUnavailableError):
            await backend(pool, httpx.MockTransport(gone)).send(
                "/v1/completions", {"model": "tiny"}
            )
        return pool

    pool = asyncio.run(scenario())
    assert pool.runner.lost == [ENDPOINT] and pool.released == 1


def test_a_bad_keep_alive_is_refused_before_any_runner_is_taken() -> None:
    async def scenario() -> FakePool:
        pool = FakePool()
        never = httpx.MockTransport(lambda request: httpx.Response(500))
        with pytest.raises(InvalidRequestError, match="keep_alive 'soon' is not a duration"):
            await backend(pool, never).send(
                "/v1/completions", {"model": "tiny", "keep_alive": "soon"}
            )
        return pool

    pool = asyncio.run(scenario())
    assert pool.acquired == [] and pool.released == 0


def test_the_models_are_the_pools() -> None:
    local = backend(FakePool(), httpx.MockTransport(lambda request: httpx.Response(500)))
    assert [card.id for card in local.models()] == ["tiny", "other"]
    assert [card.capabilities for card in local.models()] == [
        ("completion", "thinking"),
        ("completion",),
    ]
    assert local.serves("other") and not local.serves("missing")
