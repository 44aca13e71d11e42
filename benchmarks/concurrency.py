"""Concurrent streams: aggregate and per-stream decode speed, TTFT p50/p95, in one run.

    python -m benchmarks.concurrency [--levels 1 4 8 16] [--max-tokens 128]

Peers on the same model, threads and client: localserve, llama_cpp.server
(``--interrupt_requests false``), and llama-cpp-python driven directly in a continuous-batching
loop without HTTP (``benchmarks/batch_loop.py``, the ceiling of this stack). At each level, N
clients start streaming the same request at once; every stream must produce --max-tokens tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.batch_loop import BatchLoop
from benchmarks.single_stream import (
    CTX,
    PROMPT,
    LlamaCppServer,
    Sample,
    http_client,
    http_stream,
    machine_description,
    require_starter_model,
)
from localserve.hardware.devices import physical_cores
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def http_level(
    url: str,
    headers: dict[str, str],
    level: int,
    max_tokens: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, float]:
    """``level`` streams at once; ``extra`` request fields go with each."""
    with http_client() as client, ThreadPoolExecutor(max_workers=level) as pool:
        started = time.perf_counter()
        samples: list[Sample] = list(
            pool.map(
                lambda _: http_stream(client, url, headers, STARTER_MODEL, max_tokens, extra),
                range(level),
            )
        )
        wall = time.perf_counter() - started
    for sample in samples:
        if sample.tokens != max_tokens:
            raise RuntimeError(f"a stream produced {sample.tokens} tokens")
    ttfts = [s.ttft_s for s in samples]
    return {
        "aggregate": level * max_tokens / wall,
        "per_stream": statistics.median(s.decode_tok_s for s in samples),
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    model_path = require_starter_model()
    threads = physical_cores()
    rows: list[tuple[int, str, dict[str, float]]] = []

    loop = BatchLoop(model_path, max(args.levels), ctx_per_sequence=512, threads=threads)
    prompt = loop.tokenize(PROMPT)
    for level in args.levels:
        run = loop.run([prompt] * level, args.max_tokens)
        per_stream = [
            (n - 1) / (run.wall_s - t)
            for n, t in zip(run.tokens_per_sequence, run.ttft_s, strict=True)
        ]
        rows.append(
            (
                level,
                "direct batch loop",
                {
                    "aggregate": run.aggregate_tok_s,
                    "per_stream": statistics.median(per_stream),
                    "ttft_p50": percentile(run.ttft_s, 0.5),
                    "ttft_p95": percentile(run.ttft_s, 0.95),
                },
            )
        )
    loop.close()

    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    with (
        tempfile.TemporaryDirectory() as home,
        LlamaCppServer(model_path, threads) as peer,
        DaemonProcess(Path(home), "--threads", str(threads), "--ctx", str(CTX)) as daemon,
    ):
        daemon.wait_until_model("ready")
        targets = {
            "localserve": (f"{daemon.base_url}/completions", daemon.headers()),
            "llama_cpp.server": (f"http://127.0.0.1:{peer.port}/v1/completions", {}),
        }
        for url, headers in targets.values():  # warm-up
            http_level(url, headers, 1, 8)
        for level in args.levels:
            for name, (url, headers) in targets.items():
                rows.append((level, name, http_level(url, headers, level, args.max_tokens)))

    print(f"\nMachine: {machine_description()}")
    print(f"Model: {model_path.name}, {threads} threads, {args.max_tokens} tokens per stream\n")
    print("| streams | peer | aggregate tok/s | per-stream tok/s | TTFT p50 ms | TTFT p95 ms |")
    print("|---:|---|---:|---:|---:|---:|")
    for level, name, m in sorted(rows, key=lambda row: (row[0], row[1])):
        print(
            f"| {level} | {name} | {m['aggregate']:.1f} | {m['per_stream']:.1f} | "
            f"{m['ttft_p50'] * 1000:.0f} | {m['ttft_p95'] * 1000:.0f} |"
        )


if __name__ == "__main__":
    main()
