"""Each llama.cpp path the engine check can choose, against llama.cpp's own llama-server.

    benchmarks/build_llama_server.sh                 # once: llama-server from the same llama.cpp
    python -m benchmarks.engine_paths [--rounds 3] [--max-tokens 128] [--native-site DIR]

Paths: the best CPU kernels for this CPU with extra buffer types on (the default where they
work) and off (the fallback past crashing AMX kernels), and the Haswell (AVX2) kernels with them
off, what the packaged app runs on a CPU without AVX-512. ``--native-site`` adds a llama-cpp-python
built with ``-march=native`` (its ``site-packages``-like folder, put first on ``PYTHONPATH``), the
build the portable one replaced. For each path, localserve (``cpu_variant`` and ``weight_repack``
set to it) and llama-server (``--no-repack`` where they are off, with only that CPU variant beside
it) serve the starter model with the same threads, slots and client: 1 stream, then 8 at once.
Rounds interleave the peers; medians are reported, and the ratio localserve / llama-server. A
path whose engine check child dies here (the AMX kernels on some Xeons) is listed, not measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.concurrency import http_level
from benchmarks.single_stream import (
    CTX,
    PeerServer,
    machine_description,
    require_starter_model,
)
from localserve.daemon.engine_path import CHECK_TIMEOUT_S, run_check
from localserve.hardware.devices import physical_cores
from localserve.runner import llama_backends
from localserve.runner.engine_check import CheckPlan
from tests.helpers.daemon_process import DaemonProcess

ROOT = Path(__file__).resolve().parents[1]
SERVER_BUILD = ROOT / "build" / "llama-server" / "cmake" / "bin"
SLOTS = 8


@dataclass(frozen=True)
class EngineRow:
    name: str
    variant: str | None  # None: the native build's own
    extra_buffers: bool
    native_site: Path | None = None


class LlamaServer(PeerServer):
    """llama-server with exactly one CPU variant beside it (it loads the best it finds)."""

    name = "llama-server"

    def __init__(self, model: Path, variant: str, extra_buffers: bool, threads: int) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="llama-server-"))
        for library in SERVER_BUILD.glob("*.so*"):
            if "ggml-cpu" not in library.name:
                (self.folder / library.name).symlink_to(library)
        (self.folder / f"libggml-cpu-{variant}.so").symlink_to(
            llama_backends.cpu_variants()[variant]
        )
        shutil.copy2(SERVER_BUILD / "llama-server", self.folder / "llama-server")
        self.env = {**os.environ, "LD_LIBRARY_PATH": str(self.folder)}
        self.args = [
            str(self.folder / "llama-server"),
            "-m", str(model),
            "--host", "127.0.0.1", "--port", str(self.port),
            "-t", str(threads), "-tb", str(threads),
            "-c", str(CTX * SLOTS), "-np", str(SLOTS),
            "--no-webui",
        ]  # fmt: skip
        if not extra_buffers:
            self.args.append("--no-repack")

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self.folder, ignore_errors=True)


def localserve(home: Path, path: EngineRow, threads: int) -> DaemonProcess:
    env = {"LOCALSERVE_WEIGHT_REPACK": "on" if path.extra_buffers else "off"}
    if path.variant:
        env["LOCALSERVE_CPU_VARIANT"] = path.variant
    if path.native_site:
        env["PYTHONPATH"] = f"{path.native_site}{os.pathsep}{ROOT}"
    args = ("--threads", str(threads), "--ctx", str(CTX), "--parallel", str(SLOTS))
    return DaemonProcess(home, *args, env=env)


def crash_here(model: Path, path: EngineRow, threads: int) -> str | None:
    """The signal llama.cpp dies of on ``path`` on this CPU (its AMX kernels do on some
    Xeons), by an engine check child; None where it decodes. Native rows are not checked."""
    if path.native_site is not None:
        return None
    plan = CheckPlan(str(model), path.variant, path.extra_buffers, gpu_layers=0, threads=threads)
    return run_check(plan, CHECK_TIMEOUT_S).crash


def measure(url: str, headers: dict[str, str], max_tokens: int) -> tuple[float, float]:
    http_level(url, headers, 1, 8)  # warm-up
    one = http_level(url, headers, 1, max_tokens)["aggregate"]
    eight = http_level(url, headers, SLOTS, max_tokens)["aggregate"]
    return one, eight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--native-site", type=Path, help="a native llama-cpp-python's folder")
    args = parser.parse_args()
    if not llama_backends.is_portable_build():
        raise SystemExit("This benchmark compares the paths of a portable llama.cpp build.")
    if not (SERVER_BUILD / "llama-server").is_file():
        raise SystemExit("llama-server is not built: run benchmarks/build_llama_server.sh")
    model = require_starter_model()
    threads = physical_cores()
    best = llama_backends.ranked_variants(llama_backends.variant_scores())[0]
    paths = [
        EngineRow(f"{best}, extra buffer types on", best, True),
        EngineRow(f"{best}, extra buffer types off", best, False),
        EngineRow("haswell, extra buffer types off", "haswell", False),
    ]
    if args.native_site:
        paths.append(EngineRow("native build, extra buffer types on", None, True, args.native_site))
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    crashes = {path.name: signal for path in paths if (signal := crash_here(model, path, threads))}
    measured = [path for path in paths if path.name not in crashes]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for path in measured if round_ % 2 == 0 else list(reversed(measured)):
            with tempfile.TemporaryDirectory() as home, localserve(Path(home), path, threads) as d:
                d.wait_until_model("ready", timeout=120)
                url = f"{d.base_url}/completions"
                results.setdefault((path.name, "localserve"), []).append(
                    measure(url, d.headers(), args.max_tokens)
                )
            with LlamaServer(model, path.variant or best, path.extra_buffers, threads) as peer:
                url = f"http://127.0.0.1:{peer.port}/v1/completions"
                results.setdefault((path.name, "llama-server"), []).append(
                    measure(url, {}, args.max_tokens)
                )

    def median(path: EngineRow, peer: str, column: int) -> float:
        return statistics.median(sample[column] for sample in results[(path.name, peer)])

    print(f"\nMachine: {machine_description()}")
    print(
        f"Model: {model.name}, {threads} threads, {SLOTS} slots, ctx {CTX} per slot, "
        f"{args.max_tokens} tokens per stream, median of {args.rounds} rounds\n"
    )
    print(
        "| path | localserve 1 stream tok/s | llama-server 1 stream tok/s | ratio | "
        "localserve 8 streams tok/s | llama-server 8 streams tok/s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        if path.name in crashes:  # llama-server dies of it as well (same kernels)
            print(f"| {path.name} | crashes here ({crashes[path.name]}) | | | | | |")
            continue
        ours = [median(path, "localserve", column) for column in (0, 1)]
        theirs = [median(path, "llama-server", column) for column in (0, 1)]
        print(
            f"| {path.name} | {ours[0]:.1f} | {theirs[0]:.1f} | {ours[0] / theirs[0]:.2f} | "
            f"{ours[1]:.1f} | {theirs[1]:.1f} | {ours[1] / theirs[1]:.2f} |"
        )


if __name__ == "__main__":
    main()
