"""What the gateway's other paths cost: relaying a cloud stream, and remote access over TLS.

    python -m benchmarks.gateway_paths [--rounds 20]

- **cloud relay**: time to the first streamed piece from a fake OpenAI-compatible provider on
  loopback (tests/helpers/fake_cloud.py), through localserve against straight from the provider.
- **remote TLS**: an 8-token chat on the starter model through the remote listener (TLS, client
  key) against the same request on the loopback listener (plain HTTP).

Rounds interleave the two sides of each pair, so machine noise hits both alike; the table shows
medians, the time localserve adds, and the ratio.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.single_stream import machine_description, require_starter_model
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.fake_cloud import FakeCloud

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0}


def first_piece_seconds(client: httpx.Client, url: str, key: str, model: str) -> float:
    started = time.perf_counter()
    body = {**CHAT, "model": model, "stream": True}
    with client.stream(
        "POST", url, json=body, headers={"authorization": f"Bearer {key}"}
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                return time.perf_counter() - started
    raise RuntimeError("no piece arrived")


def request_seconds(client: httpx.Client, url: str, key: str) -> float:
    started = time.perf_counter()
    response = client.post(
        url, json={**CHAT, "model": STARTER_MODEL}, headers={"authorization": f"Bearer {key}"}
    )
    response.raise_for_status()
    return time.perf_counter() - started


def compare(
    rounds: int, ours: Callable[[], float], peer: Callable[[], float]
) -> tuple[float, float]:
    ours(), peer()  # warm both paths (connections, caches)
    mine, theirs = [], []
    for _ in range(rounds):
        mine.append(ours())
        theirs.append(peer())
    return statistics.median(mine), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    require_starter_model()
    rows = []
    with FakeCloud() as cloud, DaemonProcess(Path(tempfile.mkdtemp()) / "home") as daemon:
        daemon.wait_until_model("ready")
        cloud.add_to(daemon)
        key = daemon.cli("key", "add", "bench").stdout.strip()
        with httpx.Client(timeout=60) as http:
            ours, peer = compare(
                args.rounds,
                lambda: first_piece_seconds(
                    http, f"{daemon.base_url}/chat/completions", key, "fake/gpt-test"
                ),
                lambda: first_piece_seconds(
                    http, f"{cloud.base_url}/chat/completions", cloud.key, "gpt-test"
                ),
            )
            rows.append(("cloud relay: first piece", ours, "provider directly", peer))

        on = daemon.cli("remote", "on", "--interface", "127.0.0.2", "--port", "0")
        assert on.returncode == 0, on.stderr
        remote = daemon.control("GET", "/remote").json()
        pem = ssl.get_server_certificate((remote["address"], remote["port"]))
        context = ssl.create_default_context(cadata=pem)
        with httpx.Client(timeout=60, verify=context) as tls, httpx.Client(timeout=60) as plain:
            ours, peer = compare(
                args.rounds,
                lambda: request_seconds(tls, f"{remote['url']}/chat/completions", key),
                lambda: request_seconds(plain, f"{daemon.base_url}/chat/completions", key),
            )
            rows.append(("remote TLS: 8-token chat", ours, "loopback HTTP", peer))

    print(f"Machine: {machine_description()}; {args.rounds} rounds, medians\n")
    print("| path | median ms | peer | peer median ms | added ms | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for name, ours, peer_name, peer in rows:
        print(
            f"| {name} | {ours * 1000:.1f} | {peer_name} | {peer * 1000:.1f} | "
            f"{(ours - peer) * 1000:.1f} | {ours / peer:.2f} |"
        )


if __name__ == "__main__":
    main()
