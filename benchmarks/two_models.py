"""Two models generating at once: CPU threads split between their runners, against every
runner using all the threads (localserve with ``share_cpu_threads`` off, which is also what two
separate llama.cpp servers do by default).

    python -m benchmarks.two_models [--rounds 3] [--max-tokens 128]

One daemon serves the starter model under two names, so two runners. Each round starts a daemon
with sharing on and one with it off, in turn; in each, one client streams from each model at
once (--max-tokens tokens each, the same greedy completion), then one model streams alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.single_stream import (
    CTX,
    Sample,
    http_client,
    http_stream,
    machine_description,
    require_starter_model,
)
from localserve.hardware.devices import physical_cores
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

MODELS = (STARTER_MODEL, "other")


def measure(daemon: DaemonProcess, max_tokens: int) -> dict[str, float]:
    url, headers = f"{daemon.base_url}/completions", daemon.headers()
    with http_client() as client, ThreadPoolExecutor(max_workers=len(MODELS)) as pool:
        for model in MODELS:  # load both, warm
            http_stream(client, url, headers, model, 8)
        started = time.perf_counter()
        both: list[Sample] = list(
            pool.map(lambda model: http_stream(client, url, headers, model, max_tokens), MODELS)
        )
        wall = time.perf_counter() - started
        alone = http_stream(client, url, headers, STARTER_MODEL, max_tokens)
    for sample in [*both, alone]:
        if sample.tokens != max_tokens:
            raise RuntimeError(f"a stream produced {sample.tokens} tokens, not {max_tokens}")
    return {
        "alone": alone.decode_tok_s,
        "aggregate": len(both) * max_tokens / wall,
        "per_stream": statistics.median(s.decode_tok_s for s in both),
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    model_path = require_starter_model()
    threads = physical_cores()
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    results: dict[str, list[dict[str, float]]] = {"shared": [], "not shared": []}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        setup = DaemonProcess(home).cli("models", "import", str(model_path), "--name", "other")
        if setup.returncode != 0:
            raise RuntimeError(setup.stderr)
        for round_ in range(args.rounds):
            for name, share in (("shared", "true"), ("not shared", "false")):
                env = {"LOCALSERVE_SHARE_CPU_THREADS": share}
                options = ("--threads", str(threads), "--ctx", str(CTX), "--parallel", "1")
                with DaemonProcess(home, *options, env=env) as daemon:
                    figures = measure(daemon, args.max_tokens)
                results[name].append(figures)
                print(f"round {round_ + 1} {name}: {figures}", flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(f"\nMachine: {machine_description()}")
    print(
        f"Model: {model_path.name} as two models, {threads} threads, "
        f"{args.max_tokens} tokens per stream, median of {args.rounds} rounds\n"
    )
    print("| threads | one model alone tok/s | both at once: total tok/s | per stream tok/s |")
    print("|---|---:|---:|---:|")
    for name in results:
        print(
            f"| {name} | {median(name, 'alone'):.1f} | {median(name, 'aggregate'):.1f} | "
            f"{median(name, 'per_stream'):.1f} |"
        )
    ratio = median("shared", "aggregate") / median("not shared", "aggregate")
    alone = median("shared", "alone") / median("not shared", "alone")
    print(f"\nBoth at once, shared / not shared: x{ratio:.2f} (one alone: x{alone:.2f})")


if __name__ == "__main__":
    main()
