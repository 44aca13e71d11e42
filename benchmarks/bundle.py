"""The packaged app against the pip install: size on disk, and cold start to the first token.

    make package && python -m benchmarks.bundle [--rounds 5]

Cold start is the time from launching `serve` (a fresh home: no state, no runner) to the first
streamed token of a chat request sent as soon as the state file appears; the request waits for
the starter model to load. Rounds alternate the bundle and the pip install
(`python -m localserve` from this virtualenv) so machine noise hits both alike. The page cache
is warm after the first round (the OS keeps the files); round 1 is shown apart.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.single_stream import machine_description, require_starter_model
from localserve import __version__
from tests.helpers.daemon_process import DaemonProcess

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dist" / "localserve" / "localserve"


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def cold_start(command: list[str]) -> tuple[float, float]:
    """Seconds from launch to the state file (listening) and to the first streamed token."""
    with tempfile.TemporaryDirectory() as home:
        launched = time.perf_counter()
        daemon = DaemonProcess(Path(home), command=command).start(timeout=120)
        listening = time.perf_counter() - launched
        try:
            with daemon.stream_chat("Say hello.", max_tokens=4) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if '"content":"' in line.replace(" ", ""):
                        return listening, time.perf_counter() - launched
        finally:
            daemon.stop()
    raise RuntimeError("no token came back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    require_starter_model()
    if not APP.is_file():
        sys.exit("No bundle at dist/localserve: run `make package` first.")
    print(machine_description())
    tarballs = list((ROOT / "dist").glob(f"localserve-{__version__}-*.tar.gz"))
    print(f"bundle folder: {folder_size(APP.parent) / 2**20:.0f} MiB", end="")
    if tarballs:
        print(f", tarball: {tarballs[0].stat().st_size / 2**20:.0f} MiB", end="")
    version = subprocess.run([str(APP), "--version"], capture_output=True, text=True)
    print(f" ({version.stdout.strip()})")
    peers = {"bundle": [str(APP)], "pip install": [sys.executable, "-m", "localserve"]}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in peers}
    for round_number in range(1, args.rounds + 1):
        for name, command in peers.items():
            listening, first_token = cold_start(command)
            results[name].append((listening, first_token))
            print(
                f"round {round_number} {name:12} listening {listening:6.2f} s, "
                f"first token {first_token:6.2f} s",
                flush=True,
            )
    print()
    print(f"| {'median of rounds 2-' + str(args.rounds):24} | listening s | first token s |")
    print("|---|---:|---:|")
    medians = {}
    for name, rows in results.items():
        later = rows[1:] or rows
        medians[name] = (
            statistics.median(r[0] for r in later),
            statistics.median(r[1] for r in later),
        )
        print(f"| {name:24} | {medians[name][0]:11.2f} | {medians[name][1]:13.2f} |")
    ratio = medians["bundle"][1] / medians["pip install"][1]
    print(f"\nbundle / pip install, launch to first token: x{ratio:.2f}")


if __name__ == "__main__":
    main()
