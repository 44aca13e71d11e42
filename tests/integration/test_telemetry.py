"""Telemetry: the daemon's figures for a request agree with what the client measured, and the
JSON snapshot, SSE stream, Prometheus text and `localserve status` expose them."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from localserve.api.control import StatsSnapshot
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess


@pytest.fixture(scope="module")
def measured(daemon: DaemonProcess) -> dict[str, Any]:
    """One streamed request, timed by the client, and the daemon's stats after it."""
    before = daemon.stats()
    client: OpenAI = daemon.openai()
    # A long, never-seen prompt: its prefill dominates the time to first token, so the few
    # milliseconds of HTTP between client and runner stay small beside it.
    numbers = " ".join(str(random.randrange(10**6)) for _ in range(80))
    started = time.perf_counter()
    first = last = None
    usage = None
    stream = client.chat.completions.create(
        model=STARTER_MODEL,
        messages=[{"role": "user", "content": f"{numbers}\nWrite a long story about a cat."}],
        max_tokens=96,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
        if chunk.usage:
            usage = chunk.usage
    assert first is not None and last is not None and usage is not None
    after = daemon.stats_after(before.totals.requests + 1)
    return {
        "before": before,
        "after": after,
        "ttft": first - started,
        "generation_tps": (usage.completion_tokens - 1) / (last - first),
        "usage": usage,
    }


def test_request_figures_match_the_clients_within_20_percent(measured: dict[str, Any]) -> None:
    record = measured["after"].last_request
    usage = measured["usage"]
    assert usage.completion_tokens >= 32
    assert record.model == STARTER_MODEL
    assert record.completion_tokens == usage.completion_tokens
    assert record.prompt_tokens == usage.prompt_tokens
    assert record.ttft_s == pytest.approx(measured["ttft"], rel=0.2)
    assert record.generation_tps == pytest.approx(measured["generation_tps"], rel=0.2)
    assert record.prompt_tps > 0


def test_totals_and_live_rates_follow_the_request(measured: dict[str, Any]) -> None:
    before, after = measured["before"].totals, measured["after"].totals
    usage = measured["usage"]
    assert after.requests == before.requests + 1
    assert after.completion_tokens - before.completion_tokens == usage.completion_tokens
    assert after.prompt_tokens - before.prompt_tokens == usage.prompt_tokens
    live = measured["after"].live
    # The batch loop's own rate just after the request: the same order as the client's.
    client_rate = measured["generation_tps"]
    assert 0.5 * client_rate < live.generation_tps < 2 * client_rate
    assert live.prompt_tps > 0 and live.active_requests == 0


def test_memory_is_sampled(daemon: DaemonProcess) -> None:
    time.sleep(2.5)  # one sampling period
    memory = daemon.stats().memory
    assert memory.runner_rss_bytes[STARTER_MODEL] > 100 * 2**20
    assert 0 < memory.ram_used_bytes < memory.ram_total_bytes
    assert memory.gpus == []  # no NVIDIA GPU here


def stats_events(daemon: DaemonProcess, count: int) -> Iterator[StatsSnapshot]:
    url = f"{daemon.url}/localserve/v1/stats/events?interval=0.2"
    with httpx.stream("GET", url, headers=daemon.headers(), timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield StatsSnapshot.model_validate_json(line[len("data: ") :])
                count -= 1
                if count == 0:
                    return


def test_the_sse_stream_sends_snapshots(daemon: DaemonProcess, measured: dict[str, Any]) -> None:
    snapshots = list(stats_events(daemon, 3))
    times = [s.time for s in snapshots]
    assert times == sorted(times) and times[-1] - times[0] >= 0.3
    assert snapshots[-1].totals.requests >= 1


def test_prometheus_metrics(daemon: DaemonProcess, measured: dict[str, Any]) -> None:
    url = f"{daemon.url}/metrics"
    assert httpx.get(url, timeout=5).status_code == 401
    response = httpx.get(url, headers=daemon.headers(), timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    totals = daemon.stats().totals.by_model[STARTER_MODEL]
    (sample,) = families["localserve_completion_tokens"].samples
    assert sample.labels == {"model": STARTER_MODEL}
    assert sample.value == totals.completion_tokens
    assert families["localserve_runner_rss_bytes"].samples[0].value > 100 * 2**20
    assert "localserve_generation_tokens_per_second" in families
    kv = {s.labels["state"]: s.value for s in families["localserve_kv_cache_bytes"].samples}
    info = daemon.model_status().info
    assert info is not None and kv["reserved"] == info.kv_cells * info.kv_bytes_per_cell
    assert 0 < kv["used"] <= kv["reserved"]


def test_status_shows_live_figures(daemon: DaemonProcess, measured: dict[str, Any]) -> None:
    result = daemon.cli("status")
    assert result.returncode == 0, result.stderr
    assert f"model {STARTER_MODEL}: ready" in result.stdout
    assert re.search(r", 32 slots, .*KV cache [\d.]+ [KM]?B of [\d.]+ MB in use", result.stdout)
    assert "tok/s generated" in result.stdout and "memory: RAM" in result.stdout
    assert "since start:" in result.stdout
