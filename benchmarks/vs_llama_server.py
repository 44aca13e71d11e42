"""localserve against llama.cpp's own llama-server (and llama-cpp-python's server): every
concurrency, cold start and reload.

    benchmarks/build_llama_server.sh          # once: llama-server from the same llama.cpp
    python -m benchmarks.vs_llama_server [--levels 1 4 8 16 32] [--max-tokens 128] [--rounds 2]
                                         [--set flash_attention=on ...]

Same model (the starter), threads, CPU kernels (llama-server gets only the CPU variant
localserve's engine check chose, and ``--no-repack`` where localserve runs without extra buffer
types) and client. Both share one KV cache among 32 slots, of twice the 4096-token context:
localserve by default, llama-server with ``-c 8192 -np 32 --kv-unified``. "localserve exact" is
the ``batch_exact`` mode (one full-context KV stream per slot, 8 slots), for what exactness costs.
llama-cpp-python's own server (``llama_cpp.server``, one 4096-token context, one request at a
time) runs the same CPU kernels, for where localserve started from.
Streams are ``/v1/completions`` with greedy decoding, prompt lookup off (llama-server has none by
default), every stream checked to produce ``--max-tokens`` tokens.

Cold start is launch to the first answered chat (each peer; localserve with a fresh home, so
its engine check runs; then again with that home, as a second launch is); reload is the first
answer after an unload (``keep_alive: 0``), asked at once and 2 s later (after an idle unload the
next request comes later still, and finds the spare runner the daemon started ready). Rounds
interleave the peers; medians are reported.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

import localserve
from benchmarks.concurrency import http_level
from benchmarks.engine_paths import SERVER_BUILD, LlamaServer
from benchmarks.single_stream import (
    CTX,
    LlamaCppServer,
    PeerServer,
    machine_description,
    require_starter_model,
)
from localserve.api.runner import EnginePath
from localserve.hardware.devices import physical_cores
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

SLOTS = 32
EXACT_SLOTS = 8
POOL = 2 * CTX
SAME_WORK = {"prompt_lookup": False}  # llama-server drafts nothing by default
PYTHON_PEER = "llama_cpp.server"
PEERS = ("localserve", "localserve exact", "llama-server", PYTHON_PEER)


class Server(LlamaServer):
    """llama-server with one shared KV cache, as localserve's default."""

    def __init__(self, model: Path, variant: str, extra_buffers: bool, threads: int) -> None:
        super().__init__(model, variant, extra_buffers, threads)
        at = self.args.index("-c")
        self.args[at + 1 : at + 4] = [str(POOL), "-np", str(SLOTS)]
        self.args.append("--kv-unified")


def first_answer(
    client: httpx.Client, url: str, headers: dict[str, str], model: str, deadline_s: float = 120
) -> float:
    """Seconds until a one-token chat answers 200 (polling every 10 ms while the server
    starts). The client is made beforehand for both servers: a new one costs 20 ms (its TLS
    context), which would count as start-up and space the polls out."""
    started = time.perf_counter()
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    while time.perf_counter() - started < deadline_s:
        try:
            if client.post(url, headers=headers, json=body).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {deadline_s} s")


def localserve_cold_start(home: Path, threads: int) -> float:
    """Launch ``localserve serve`` and wait for its first chat answer (its state file, which
    says the port, looked for every 5 ms)."""
    daemon = DaemonProcess(home, "--threads", str(threads))
    with httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        daemon.start(poll_s=0.005)
        try:
            url = f"{daemon.base_url}/chat/completions"
            first_answer(client, url, daemon.headers(), STARTER_MODEL)
            return time.perf_counter() - started
        finally:
            daemon.stop()


def server_cold_start(make: Callable[[], PeerServer]) -> float:
    server = make()
    with httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        server.process = subprocess.Popen(
            server.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server.env
        )
        try:
            url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
            first_answer(client, url, {}, STARTER_MODEL)
            return time.perf_counter() - started
        finally:
            server.__exit__(None, None, None)


IDLE_S = 2.0  # a reload after an idle unload: the next request comes later than at once


def reload_time(daemon: DaemonProcess, idle_s: float = 0.0) -> float:
    """The first answer after the model was unloaded (Ollama's keep_alive 0), asked
    ``idle_s`` seconds after the unload (the spare runner the daemon then starts has had that
    long to import; at once, it has not)."""
    body = {"model": STARTER_MODEL, "keep_alive": 0}
    httpx.post(f"{daemon.url}/api/generate", headers=daemon.headers(), json=body, timeout=30)
    daemon.wait_until_model("unloaded")
    time.sleep(idle_s)
    with httpx.Client(timeout=30) as client:
        url = f"{daemon.base_url}/chat/completions"
        return first_answer(client, url, daemon.headers(), STARTER_MODEL)


def compile_bytecode() -> None:
    """localserve's bytecode, as a pip install (and ``make``) writes it. An editable install run
    with PYTHONDONTWRITEBYTECODE, as on this machine, would compile every module again at each
    start: about 40 ms of CPU in each process, which a user's install never pays."""
    compileall.compile_dir(Path(localserve.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--levels",
        type=int,
        nargs="*",
        default=[1, 4, 8, 16, 32],
        help="concurrent streams to measure (none: only cold starts and reloads)",
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a localserve setting for both localserve daemons (e.g. flash_attention=on)",
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    env = {f"LOCALSERVE_{name.upper()}": value for name, value in settings.items()}
    if not (SERVER_BUILD / "llama-server").is_file():
        raise SystemExit("llama-server is not built: run benchmarks/build_llama_server.sh")
    model = require_starter_model()
    compile_bytecode()
    threads = physical_cores()
    rows: dict[tuple[int, str], list[dict[str, float]]] = {}
    starts: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        base = ("--threads", str(threads), "--ctx", str(CTX))
        exact = {**env, "LOCALSERVE_BATCH_EXACT": "true"}
        with (
            DaemonProcess(home / "shared", *base, env=env) as shared,
            DaemonProcess(home / "exact", *base, "--parallel", str(EXACT_SLOTS), env=exact) as ex,
        ):
            shared.wait_until_model("ready")
            ex.wait_until_model("ready")
            info = shared.model_status().info
            assert info is not None and info.cpu_variant is not None
            variant, extra = info.cpu_variant, info.extra_buffers

            def server() -> Server:
                return Server(model, variant, extra, threads)

            def python_server() -> LlamaCppServer:
                kernels = EnginePath(variant, extra, "as localserve's runner")
                return LlamaCppServer(model, threads, kernels)

            with server() as peer, python_server() as python_peer:
                targets = {
                    "localserve": (f"{shared.base_url}/completions", shared.headers()),
                    "localserve exact": (f"{ex.base_url}/completions", ex.headers()),
                    "llama-server": (f"http://127.0.0.1:{peer.port}/v1/completions", {}),
                    PYTHON_PEER: (f"http://127.0.0.1:{python_peer.port}/v1/completions", {}),
                }
                for url, headers in targets.values():
                    if args.levels:
                        http_level(url, headers, 1, 8)  # warm-up
                for round_ in range(args.rounds if args.levels else 0):
                    order = list(targets.items())[:: 1 if round_ % 2 == 0 else -1]
                    for level in args.levels:
                        for name, (url, headers) in order:
                            measured = http_level(url, headers, level, args.max_tokens, SAME_WORK)
                            rows.setdefault((level, name), []).append(measured)
            for _ in range(args.rounds):
                starts.setdefault("localserve reload, asked at once", []).append(
                    reload_time(shared)
                )
                starts.setdefault(f"localserve reload, asked {IDLE_S:.0f} s later", []).append(
                    reload_time(shared, IDLE_S)
                )
        for round_ in range(args.rounds):
            starts.setdefault("llama-server", []).append(server_cold_start(server))
            starts.setdefault(PYTHON_PEER, []).append(server_cold_start(python_server))
            fresh = home / f"fresh-{round_}"
            starts.setdefault("localserve, fresh home", []).append(
                localserve_cold_start(fresh, threads)
            )
            starts.setdefault("localserve, second launch", []).append(
                localserve_cold_start(fresh, threads)
            )
    report(rows, starts, threads, args.max_tokens)
    if settings:
        print("\nlocalserve settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items()))


def median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(sample[key] for sample in samples)


def report(
    rows: dict[tuple[int, str], list[dict[str, float]]],
    starts: dict[str, list[float]],
    threads: int,
    max_tokens: int,
) -> None:
    print(f"\nMachine: {machine_description()}")
    print(f"Model: starter, {threads} threads, {max_tokens} tokens per stream\n")
    if rows:
        print_throughput(rows)
    print("\n| launch to first answer | seconds (median) | runs |")
    print("|---|---:|---|")
    for name, seconds in starts.items():
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"| {name} | {statistics.median(seconds):.2f} | {runs} |")


def print_throughput(rows: dict[tuple[int, str], list[dict[str, float]]]) -> None:
    """Tok/s of each peer, each as a ratio of llama-server's, and first-token times."""
    print(
        "| streams | localserve tok/s | exact tok/s | llama-server tok/s | llama_cpp.server tok/s "
        "| ratio | exact ratio | llama_cpp.server ratio "
        "| TTFT p50 ms localserve / exact / llama-server / llama_cpp.server "
        "| TTFT max ms localserve |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for level in sorted({level for level, _ in rows}):
        peers = [rows[(level, name)] for name in PEERS]
        aggregate = [median(samples, "aggregate") for samples in peers]
        ttft = " / ".join(f"{median(samples, 'ttft_p50') * 1000:.0f}" for samples in peers)
        worst = max(sample["ttft_p95"] for sample in peers[0]) * 1000
        theirs = aggregate[2]
        print(
            f"| {level} | {' | '.join(f'{tok_s:.1f}' for tok_s in aggregate)} | "
            f"{aggregate[0] / theirs:.2f} | {aggregate[1] / theirs:.2f} | "
            f"{aggregate[3] / theirs:.2f} | {ttft} | {worst:.0f} |"
        )


if __name__ == "__main__":
    main()
