"""The benchmark stays runnable: one short round, and its table names every peer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_single_stream_benchmark_prints_its_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.single_stream", "--rounds", "1", "--max-tokens", "16"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == [
        "localserve",
        "llama_cpp.server",
        "direct create_completion",
        "direct generate loop",
    ]
    for row in rows[1:]:
        decode = float(row.split("|")[2])
        assert decode > 0


def test_concurrency_benchmark_prints_its_table() -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.concurrency",
            "--levels", "1", "2", "--max-tokens", "8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    seen = {(row[1].strip(), row[2].strip()) for row in rows}
    for level in ("1", "2"):
        for peer in ("localserve", "llama_cpp.server", "direct batch loop"):
            assert (level, peer) in seen
    assert all(float(row[3]) > 0 for row in rows)


def test_chat_followup_benchmark_prints_its_table() -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.chat_followup",
            "--rounds", "1", "--history-tokens", "300",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row[1].strip() for row in rows] == ["with prefix reuse", "without prefix reuse"]
    assert all(float(row[2]) > 0 for row in rows)
