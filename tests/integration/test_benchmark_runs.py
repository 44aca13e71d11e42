"""The benchmark stays runnable: one short round, and its table names every peer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.engine_paths import SERVER_BUILD
from tests.helpers.this_cpu import extra_buffers_decode_here

ROOT = Path(__file__).resolve().parents[2]


def benchmark_rows(module: str, *args: str) -> list[list[str]]:
    """Run ``python -m benchmarks.<module> ARGS`` and return its table's data rows, split."""
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[1:]]


def test_single_stream_benchmark_prints_its_table() -> None:
    rows = benchmark_rows("single_stream", "--rounds", "1", "--max-tokens", "16")
    assert [row[0] for row in rows] == [
        "localserve",
        "llama_cpp.server",
        "direct create_completion",
        "direct generate loop",
    ]
    assert all(float(row[1]) > 0 for row in rows)


def test_concurrency_benchmark_prints_its_table() -> None:
    rows = benchmark_rows("concurrency", "--levels", "1", "2", "--max-tokens", "8")
    seen = {(row[0], row[1]) for row in rows}
    for level in ("1", "2"):
        for peer in ("localserve", "llama_cpp.server", "direct batch loop"):
            assert (level, peer) in seen
    assert all(float(row[2]) > 0 for row in rows)


def test_chat_followup_benchmark_prints_its_table() -> None:
    rows = benchmark_rows("chat_followup", "--rounds", "1", "--history-tokens", "300")
    assert [row[0] for row in rows] == ["with prefix reuse", "without prefix reuse"]
    assert all(float(row[1]) > 0 for row in rows)


def test_prompt_lookup_benchmark_prints_its_table() -> None:
    rows = benchmark_rows("prompt_lookup", "--rounds", "1", "--max-tokens", "24")
    assert [row[0] for row in rows] == [
        "code: repeat a block",
        "code: continue a file",
        "prose",
        "counting",
    ]
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)


def test_gateway_paths_benchmark_prints_its_table() -> None:
    rows = benchmark_rows("gateway_paths", "--rounds", "2")
    assert [row[0] for row in rows] == ["cloud relay: first piece", "remote TLS: 8-token chat"]
    assert [row[2] for row in rows] == ["provider directly", "loopback HTTP"]
    assert all(float(row[1]) > 0 and float(row[3]) > 0 for row in rows)


def test_two_models_benchmark_prints_its_table() -> None:
    rows = benchmark_rows("two_models", "--rounds", "1", "--max-tokens", "8")
    assert [row[0] for row in rows] == ["shared", "not shared"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])


def test_engine_paths_benchmark_prints_its_table() -> None:
    if not (SERVER_BUILD / "llama-server").is_file():
        pytest.skip("llama-server is not built (benchmarks/build_llama_server.sh, ~5 min)")
    rows = benchmark_rows("engine_paths", "--rounds", "1", "--max-tokens", "8")
    assert [row[0].split(",")[1].strip() for row in rows] == [
        "extra buffer types on",
        "extra buffer types off",
        "extra buffer types off",
    ]
    crashed = [row[0] for row in rows if row[1].startswith("crashes here")]
    if extra_buffers_decode_here():
        assert not crashed
    else:  # the AMX kernels on some Xeons: listed, not measured
        assert crashed == [rows[0][0]]
    assert all(float(cell) > 0 for row in rows if row[0] not in crashed for cell in row[1:])


def test_the_llama_server_benchmark_prints_its_tables() -> None:
    if not (SERVER_BUILD / "llama-server").is_file():
        pytest.skip("llama-server is not built (benchmarks/build_llama_server.sh, ~5 min)")
    rows = benchmark_rows(
        "vs_llama_server", "--levels", "1", "2", "--rounds", "1", "--max-tokens", "8"
    )
    throughput, starts = rows[:2], rows[3:]
    assert [row[0] for row in throughput] == ["1", "2"]
    # tok/s of localserve, exact, llama-server, llama_cpp.server, then three ratios
    assert all(float(cell) > 0 for row in throughput for cell in row[1:8])
    assert all(len(row[8].split(" / ")) == 4 for row in throughput)  # TTFT p50 of each peer
    assert [row[0] for row in starts] == [
        "localserve reload, asked at once",
        "localserve reload, asked 2 s later",
        "llama-server",
        "llama_cpp.server",
        "localserve, fresh home",
        "localserve, second launch",
    ]
