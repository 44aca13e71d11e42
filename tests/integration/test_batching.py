"""Continuous batching: correctness, not speed (benchmarks/concurrency.py measures speed)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

PROMPTS = [
    "Once upon a time in a small village,",
    "The three most important things in programming are",
    "def fibonacci(n):",
    "My favourite season of the year is",
]


# Tests that compare tokens across batch shapes run with one KV stream per slot; with the
# shared cache (the default) near-tied logits may tip with what else is in the cache.
EXACT = {"LOCALSERVE_BATCH_EXACT": "true"}


@pytest.fixture(scope="module")
def batching(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    home = tmp_path_factory.mktemp("batching")
    with DaemonProcess(home, "--parallel", "4", env=EXACT) as daemon:
        daemon.wait_until_model("ready")
        yield daemon


def complete(daemon: DaemonProcess, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{daemon.base_url}/completions",
        headers=daemon.headers(),
        json={"model": STARTER_MODEL, **body},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@contextlib.contextmanager
def long_stream(daemon: DaemonProcess, prompt: str, events: int) -> Iterator[None]:
    """Hold a 3000-token stream open, after reading ``events`` lines of it."""
    body = {"model": STARTER_MODEL, "prompt": prompt, "max_tokens": 3000, "stream": True}
    with httpx.stream(
        "POST", f"{daemon.base_url}/completions", headers=daemon.headers(), json=body, timeout=60
    ) as response:
        lines = response.iter_lines()
        for _ in range(events):
            next(lines)
        yield


def cold_run(home: Path, prompt: str, **args: Any) -> dict[str, Any]:
    """The same request on a fresh daemon, whose cache holds nothing."""
    with DaemonProcess(home, "--parallel", "2", env=EXACT) as daemon:
        daemon.wait_until_model("ready")
        return complete(daemon, prompt=prompt, **args)


def run_together(daemon: DaemonProcess, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda body: complete(daemon, **body), bodies))


def test_runner_reports_its_slots(batching: DaemonProcess) -> None:
    info = batching.model_status().info
    assert info is not None and info.parallel == 4


def test_concurrent_streams_match_the_same_requests_one_at_a_time(batching: DaemonProcess) -> None:
    # Without prompt lookup: its draft rows round differently from one-token steps, so with it
    # the text may differ at near-ties depending on the other streams (test_prompt_lookup.py).
    bodies = [
        {
            "prompt": prompt,
            "max_tokens": 24,
            "temperature": 0.8,
            "seed": 100 + index,
            "prompt_lookup": False,
        }
        for index, prompt in enumerate(PROMPTS)
    ]
    # Each prompt is read once first: later requests reuse its cached cells, and a prompt read
    # in a different batch shape may tip near-tied logits, so both runs start from the cache.
    for body in bodies:
        complete(batching, **{**body, "max_tokens": 1})
    alone = [complete(batching, **body)["choices"][0]["text"] for body in bodies]
    together = [result["choices"][0]["text"] for result in run_together(batching, bodies)]
    assert together == alone
    assert len(set(alone)) == len(alone)


def test_stop_strings_and_grammars_hold_per_sequence(batching: DaemonProcess) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    bodies = [
        {"prompt": "1, 2, 3, 4,", "max_tokens": 40, "temperature": 0, "stop": [" 9"]},
        {
            "prompt": 'A JSON object with a number: {"n": 4} and another:',
            "max_tokens": 40,
            "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
        },
        {"prompt": "1, 2, 3, 4,", "max_tokens": 40, "temperature": 0},
        {"prompt": "The alphabet: a, b, c,", "max_tokens": 12, "temperature": 0, "stop": ["f"]},
    ]
    stopped, constrained, free, letters = run_together(batching, bodies)
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["choices"][0]["text"].rstrip().endswith("8,")
    assert isinstance(json.loads(constrained["choices"][0]["text"])["n"], int)
    assert free["choices"][0]["finish_reason"] == "length"
    assert " 9," in free["choices"][0]["text"]
    assert "f" not in letters["choices"][0]["text"]
    assert letters["choices"][0]["finish_reason"] == "stop"


def test_prefix_reuse_returns_the_same_tokens_as_a_cold_run(tmp_path: Path) -> None:
    history = "The following is a long conversation about gardening. " * 40
    first_turn = history + "\nUser: What should I plant in spring?\nAssistant:"
    second_turn = first_turn + " Tomatoes and basil.\nUser: And in autumn?\nAssistant:"
    args = {"max_tokens": 16, "temperature": 0}
    cold = cold_run(tmp_path / "cold", second_turn, **args)
    with DaemonProcess(tmp_path / "warm", "--parallel", "2", env=EXACT) as daemon:
        daemon.wait_until_model("ready")
        complete(daemon, prompt=first_turn, **args)
        warm = complete(daemon, prompt=second_turn, **args)
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > warm["usage"]["prompt_tokens"] // 2
    assert warm["choices"][0]["text"] == cold["choices"][0]["text"]


def test_requests_beyond_the_slots_wait_then_complete(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "home", "--parallel", "1") as daemon:
        daemon.wait_until_model("ready")
        bodies = [{"prompt": prompt, "max_tokens": 12, "temperature": 0} for prompt in PROMPTS[:3]]
        results = run_together(daemon, bodies)
        assert [r["usage"]["completion_tokens"] for r in results] == [12, 12, 12]


def test_cancelled_stream_frees_its_slot(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "home", "--parallel", "1") as daemon:
        daemon.wait_until_model("ready")
        with long_stream(daemon, "1, 2, 3,", events=6):
            pass
        # With one slot, this waits forever unless the abandoned stream gave the slot back.
        result = complete(daemon, prompt="Hello", max_tokens=4, temperature=0)
        assert result["usage"]["completion_tokens"] >= 1
        assert re.search(r"generated \d+ \(cancelled\)", daemon.runner_log())


def test_prefix_is_copied_from_a_busy_slot(tmp_path: Path) -> None:
    history = "Notes on the history of the bicycle, chapter by chapter. " * 30
    follow_up = history + "\nQuestion: who invented it?\nAnswer:"
    args = {"max_tokens": 12, "temperature": 0}
    cold = cold_run(tmp_path / "cold", follow_up, **args)
    with DaemonProcess(tmp_path / "warm", "--parallel", "2", env=EXACT) as daemon:
        daemon.wait_until_model("ready")
        with long_stream(daemon, history, events=4):
            # Slot 0 is still generating after the history; this request gets slot 1.
            warm = complete(daemon, prompt=follow_up, **args)
    cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > warm["usage"]["prompt_tokens"] // 2
    assert warm["choices"][0]["text"] == cold["choices"][0]["text"]


def test_the_shared_cache_takes_32_slots_and_twice_the_context_by_default(
    tmp_path: Path,
) -> None:
    with DaemonProcess(tmp_path / "home", "--ctx", "1024") as daemon:
        daemon.wait_until_model("ready")
        info = daemon.model_status().info
        assert info is not None
        assert (info.parallel, info.kv_cells) == (32, 2048)
        assert info.kv_bytes_per_cell > 0
        results = run_together(
            daemon, [{"prompt": p, "max_tokens": 8, "temperature": 0} for p in PROMPTS]
        )
        assert [r["usage"]["completion_tokens"] for r in results] == [8] * len(PROMPTS)


def test_a_full_shared_cache_preempts_and_every_stream_still_finishes(tmp_path: Path) -> None:
    """Four answers of 200 tokens cannot all grow in 512 cells: the youngest are preempted,
    prefill what they had again when room is back, and finish with all their tokens."""
    env = {"LOCALSERVE_KV_CACHE_TOKENS": "512"}
    with DaemonProcess(tmp_path / "home", "--ctx", "512", "--parallel", "4", env=env) as daemon:
        daemon.wait_until_model("ready")
        counting = ["1, 2, 3,", "2, 4, 6,", "5, 10, 15,", "100, 200, 300,"]  # never end
        bodies = [
            {"prompt": prompt, "max_tokens": 200, "temperature": 0, "prompt_lookup": False}
            for prompt in counting
        ]
        results = run_together(daemon, bodies)
        assert [r["usage"]["completion_tokens"] for r in results] == [200] * len(counting)
        assert [r["choices"][0]["finish_reason"] for r in results] == ["length"] * 4
        # The text goes on where it was after each preemption: the count has no gap.
        numbers = [int(n) for n in re.findall(r"\d+", results[0]["choices"][0]["text"])]
        whole = numbers[:-1]  # the last may be cut by max_tokens
        assert len(whole) > 40 and whole == list(range(4, 4 + len(whole)))
        assert "preempted" in daemon.runner_log()
        kv = daemon.stats_after(len(counting)).memory.kv_cache[STARTER_MODEL]
        assert kv.reserved_bytes == 512 * daemon.model_status().info.kv_bytes_per_cell  # type: ignore[union-attr]
        assert 0 < kv.used_bytes <= kv.reserved_bytes
