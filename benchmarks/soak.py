"""Soak: mixed traffic for a long while, watching latency and memory for upward trends.

    python -m benchmarks.soak [--minutes 30] [--workers 6] [--interval 60]

Workers loop over a mix of requests on the starter model: plain chats, streamed chats read to
the end, streams cancelled after a few pieces, clients that disconnect mid-stream, and 429s when
the queue is full. Every interval prints p50/p99 latency of completed requests and the RSS of
the daemon and its runner; the last line compares the final interval with the first one after
warm-up (the target: no upward trend). Not a CI test: it runs as long as you ask.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from benchmarks.single_stream import machine_description, require_starter_model
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

PROMPTS = ["Hi", "Name three colours.", "Write a haiku about rain.", "Count to ten."]


class Soak:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.outcomes: Counter[str] = Counter()
        self.stop = threading.Event()

    def record(self, outcome: str, seconds: float | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if seconds is not None:
                self.latencies.append(seconds)

    def take(self) -> tuple[list[float], Counter[str]]:
        with self.lock:
            latencies, self.latencies = self.latencies, []
            outcomes, self.outcomes = self.outcomes, Counter()
        return latencies, outcomes

    def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        url = f"{self.daemon.base_url}/chat/completions"
        with httpx.Client(headers=self.daemon.headers(), timeout=120) as client:
            while not self.stop.is_set():
                kind = rng.choice(["plain", "stream", "cancel", "disconnect"])
                body = {
                    "model": STARTER_MODEL,
                    "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                    "max_tokens": rng.randint(8, 64),
                    "stream": kind != "plain",
                }
                started = time.perf_counter()
                try:
                    if kind == "plain":
                        response = client.post(url, json=body)
                        outcome = "ok" if response.status_code == 200 else str(response.status_code)
                        self.record(outcome, time.perf_counter() - started)
                        continue
                    with client.stream("POST", url, json=body) as response:
                        if response.status_code != 200:
                            response.read()
                            self.record(str(response.status_code))
                            continue
                        stop_after = {"cancel": 3, "disconnect": 1}.get(kind)
                        for count, _ in enumerate(response.iter_lines(), 1):
                            if stop_after and count >= stop_after:
                                break
                    if kind == "stream":
                        self.record("ok", time.perf_counter() - started)
                    else:
                        self.record(kind)
                except httpx.HTTPError as exc:
                    self.record(type(exc).__name__)


def rss(pid: int | None) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20 if pid else float("nan")
    except psutil.Error:
        return float("nan")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--interval", type=float, default=60)
    args = parser.parse_args()
    require_starter_model()
    print(machine_description())
    rows = []
    with (
        tempfile.TemporaryDirectory() as home,
        DaemonProcess(Path(home), "--parallel", "4", env={"LOCALSERVE_MAX_QUEUE": "2"}) as daemon,
    ):
        daemon.wait_until_model("ready")
        soak = Soak(daemon)
        threads = [
            threading.Thread(target=soak.worker, args=(seed,), daemon=True)
            for seed in range(args.workers)
        ]
        for thread in threads:
            thread.start()
        print(
            f"{'min':>5} {'done':>5} {'p50 s':>7} {'p99 s':>7} {'daemon MiB':>11} "
            f"{'runner MiB':>11}  other outcomes"
        )
        deadline = time.monotonic() + args.minutes * 60
        started = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))
            latencies, outcomes = soak.take()
            assert daemon.process is not None
            status = daemon.model_status()
            row = (
                (time.monotonic() - started) / 60,
                len(latencies),
                statistics.median(latencies) if latencies else float("nan"),
                percentile(latencies, 0.99),
                rss(daemon.process.pid),
                rss(status.pid),
            )
            rows.append(row)
            others = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()) if k != "ok")
            print(
                f"{row[0]:5.1f} {row[1]:5d} {row[2]:7.3f} {row[3]:7.3f} {row[4]:11.1f} "
                f"{row[5]:11.1f}  {others}",
                flush=True,
            )
        soak.stop.set()
        for thread in threads:
            thread.join(timeout=130)
    if len(rows) >= 3:
        warm, last = rows[1], rows[-1]  # the first interval is warm-up
        print(
            f"last vs first after warm-up: p50 x{last[2] / warm[2]:.2f}, "
            f"p99 x{last[3] / warm[3]:.2f}, daemon RSS {last[4] - warm[4]:+.1f} MiB, "
            f"runner RSS {last[5] - warm[5]:+.1f} MiB"
        )


if __name__ == "__main__":
    main()
