"""The shared KV cache's accounting (``runner/kv.py``) and its figures in the daemon's
telemetry and ``/metrics``."""

from __future__ import annotations

import os
from typing import Any

import llama_cpp
import pytest

from localserve.api.engine import EngineSettings
from localserve.daemon.telemetry import Telemetry
from localserve.runner.kv import GROWTH_RESERVE, SharedCells, Slot
from localserve.server.metrics import prometheus_text


@pytest.fixture
def removed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sequences whose cells were dropped (no llama.cpp context here)."""
    seen: list[int] = []

    def seq_rm(memory: Any, seq_id: int, start: int, end: int) -> bool:
        assert (start, end) == (-1, -1)
        seen.append(seq_id)
        return True

    monkeypatch.setattr(llama_cpp, "llama_memory_seq_rm", seq_rm)
    return seen


def slots(*held: tuple[int, bool, float]) -> list[Slot]:
    """Slots holding ``n`` cells, busy or idle, last used at ``t``."""
    return [Slot(index, [7] * n, last_used=t, busy=busy) for index, (n, busy, t) in enumerate(held)]


def test_idle_prefixes_go_least_recently_used_first(removed: list[int]) -> None:
    held = slots((40, True, 0.0), (30, False, 5.0), (20, False, 1.0))
    cells = SharedCells(None, 100, held)
    assert cells.used == 90 and cells.free == 10
    assert cells.make_room(25)
    assert removed == [2]  # the older idle prefix; the newer one is kept
    assert cells.free == 30
    assert not cells.make_room(80)  # busy slots' cells are never dropped here
    assert removed == [2, 1] and cells.free == 60


def test_a_prompt_is_admitted_only_beside_what_the_running_sequences_will_hold() -> None:
    cells = SharedCells(None, 1000, [])
    assert cells.admits(5000, [])  # alone, any request fits: the cache is at least a context
    room = 1000 - 300 - 200 - GROWTH_RESERVE * 3
    assert cells.admits(room, [300, 200])
    assert not cells.admits(room + 1, [300, 200])


def test_the_cache_size_follows_the_settings() -> None:
    shared = EngineSettings()
    assert shared.kv_cells(4096, 32) == 8192  # twice the context, whatever the slots
    assert EngineSettings(kv_cache_tokens=1000).kv_cells(4096, 32) == 4096  # never below ctx
    assert EngineSettings(kv_cache_tokens=20000).kv_contexts(4096, 32) == 5
    exact = EngineSettings(batch_exact=True)
    assert exact.kv_cells(4096, 4) == 16384 and exact.kv_contexts(4096, 4) == 4


def test_kv_use_reaches_the_stats_and_metrics() -> None:
    telemetry = Telemetry(lambda: 0, lambda: {"m": os.getpid()})
    tick = {
        "event": "tick",
        "prompt_tokens": 10,
        "prompt_seconds": 0.1,
        "generated_tokens": 5,
        "generation_seconds": 0.1,
        "kv_cells_used": 300,
        "kv_cells": 8192,
        "kv_bytes_per_cell": 100,
    }
    telemetry.on_runner_event("m", tick)
    telemetry.sample()
    kv = telemetry.snapshot().memory.kv_cache["m"]
    assert (kv.used_bytes, kv.reserved_bytes) == (30_000, 819_200)
    text = prometheus_text(telemetry.snapshot())
    assert 'localserve_kv_cache_bytes{model="m",state="used"} 30000' in text
    assert 'localserve_kv_cache_bytes{model="m",state="reserved"} 819200' in text
    gone = Telemetry(lambda: 0, lambda: {})  # a runner that stopped gave its cache back
    gone.on_runner_event("m", tick)
    gone.sample()
    assert gone.snapshot().memory.kv_cache == {}
