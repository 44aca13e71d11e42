"""Speculative decoding by prompt lookup: decode speed with and without it, per kind of text.

    python -m benchmarks.prompt_lookup [--rounds 5] [--max-tokens 128]

One localserve daemon; every workload is streamed through /v1/completions at temperature 0 with
``prompt_lookup`` false and true, interleaved round by round so machine noise hits both alike.
The table shows median decode tok/s (tokens after the first, over the time after the first), the
ratio on/off, and the share of drafted tokens the model confirmed (from the usage's
``completion_tokens_details``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.single_stream import http_client, machine_description, require_starter_model
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

ROOT = Path(__file__).resolve().parents[1]


def source(path: str, lines: int) -> str:
    return "".join((ROOT / path).read_text().splitlines(keepends=True)[:lines])


def workloads() -> dict[str, str]:
    function = source("localserve/runner/text.py", 50)
    return {
        # An editor asking for code that repeats its context: a refactor, a second similar case.
        "code: repeat a block": function
        + "\n\n# The same code again, unchanged:\n"
        + function.splitlines(keepends=True)[0],
        "code: continue a file": source("localserve/runner/lookup.py", 60),
        "prose": "Once upon a time, in a small village by the sea, there lived",
        "counting": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
    }


@dataclass
class Sample:
    decode_tok_s: float
    accepted: int
    rejected: int


def stream(
    client: httpx.Client, daemon: DaemonProcess, prompt: str, lookup: bool, n: int
) -> Sample:
    body = {
        "model": STARTER_MODEL,
        "prompt": prompt,
        "max_tokens": n,
        "temperature": 0,
        "prompt_lookup": lookup,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = last = 0.0
    usage: dict[str, object] = {}
    url = f"{daemon.base_url}/completions"
    with client.stream("POST", url, headers=daemon.headers(), json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            if event.get("choices") and event["choices"][0].get("text"):
                last = time.perf_counter()
                first = first or last
    tokens = int(str(usage["completion_tokens"]))
    details = usage["completion_tokens_details"]
    assert isinstance(details, dict)
    return Sample(
        (tokens - 1) / (last - first),
        details["accepted_prediction_tokens"],
        details["rejected_prediction_tokens"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    require_starter_model()
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    cases = workloads()
    results: dict[tuple[str, bool], list[Sample]] = {
        (name, lookup): [] for name in cases for lookup in (False, True)
    }
    with tempfile.TemporaryDirectory() as home, http_client() as client:
        daemon = DaemonProcess(Path(home), env={"LOCALSERVE_PARALLEL": "1"})
        daemon.start().wait_until_model("ready")
        try:
            for prompt in cases.values():  # warm-up: prompts enter the cache
                stream(client, daemon, prompt, False, 4)
            for _ in range(args.rounds):
                for name, prompt in cases.items():
                    for lookup in (False, True):
                        sample = stream(client, daemon, prompt, lookup, args.max_tokens)
                        results[(name, lookup)].append(sample)
        finally:
            daemon.stop()

    print(f"\nMachine: {machine_description()}")
    print(f"{args.max_tokens} tokens at temperature 0, medians of {args.rounds} rounds\n")
    print("| text | off tok/s | on tok/s | on/off | drafts confirmed |")
    print("|---|---:|---:|---:|---:|")
    for name in cases:
        off = statistics.median(s.decode_tok_s for s in results[(name, False)])
        on_samples = results[(name, True)]
        on = statistics.median(s.decode_tok_s for s in on_samples)
        accepted = sum(s.accepted for s in on_samples)
        drafted = accepted + sum(s.rejected for s in on_samples)
        share = f"{accepted}/{drafted}" if drafted else "0/0"
        print(f"| {name} | {off:.1f} | {on:.1f} | {on / off:.2f}x | {share} |")


if __name__ == "__main__":
    main()
