"""Turn 2 of a chat with a ~1,500-token history: time to first token with and without prefix reuse.

    python -m benchmarks.chat_followup [--rounds 5] [--history-tokens 1500]

Two localserve daemons in the same run, identical but for ``LOCALSERVE_PREFIX_REUSE``. Each round
is a new conversation (its first line differs, so no round reuses another's cache): turn 1 asks a
question and gets a short answer; turn 2 sends the whole history again plus a new question, as
chat clients do, and we time its first token.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.single_stream import http_client, machine_description, require_starter_model
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

FILLER = (
    "The committee reviewed the quarterly garden report, the watering schedule, the compost "
    "rotation and the list of seeds to order before the spring planting season begins. "
)


def conversation(round_index: int, history_tokens: int) -> list[dict[str, str]]:
    # About 30 tokens per filler sentence with this tokenizer.
    paragraphs = max(1, history_tokens // 30)
    messages = [{"role": "system", "content": f"Conversation {round_index}. You are helpful."}]
    for turn in range(paragraphs // 5):
        messages.append({"role": "user", "content": FILLER * 4 + f"Point {turn}?"})
        messages.append({"role": "assistant", "content": FILLER})
    return messages


def chat(client: Any, daemon: DaemonProcess, messages: list[dict[str, str]]) -> tuple[str, float]:
    """Stream a reply; return its text and the time to its first content."""
    body = {
        "model": STARTER_MODEL,
        "messages": messages,
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    text = []
    with client.stream(
        "POST", f"{daemon.base_url}/chat/completions", headers=daemon.headers(), json=body
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            content = event["choices"][0]["delta"].get("content") if event["choices"] else None
            if content:
                first = first or time.perf_counter()
                text.append(content)
    assert first is not None
    return "".join(text), first - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--history-tokens", type=int, default=1500)
    args = parser.parse_args()
    require_starter_model()
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    results: dict[str, list[float]] = {"with prefix reuse": [], "without prefix reuse": []}
    with tempfile.TemporaryDirectory() as home:
        daemons = {
            "with prefix reuse": DaemonProcess(Path(home) / "reuse"),
            "without prefix reuse": DaemonProcess(
                Path(home) / "no-reuse", env={"LOCALSERVE_PREFIX_REUSE": "false"}
            ),
        }
        for daemon in daemons.values():
            daemon.start().wait_until_model("ready")
        try:
            with http_client() as client:
                for round_index in range(args.rounds):
                    for name, daemon in daemons.items():
                        messages = conversation(round_index, args.history_tokens)
                        messages.append({"role": "user", "content": "What should we do first?"})
                        answer, _ = chat(client, daemon, messages)
                        messages.append({"role": "assistant", "content": answer})
                        messages.append({"role": "user", "content": "And after that?"})
                        _, ttft = chat(client, daemon, messages)
                        results[name].append(ttft)
        finally:
            for daemon in daemons.values():
                daemon.stop()

    with_reuse = statistics.median(results["with prefix reuse"])
    without = statistics.median(results["without prefix reuse"])
    print(f"\nMachine: {machine_description()}")
    print(f"History ≈ {args.history_tokens} tokens, medians of {args.rounds} conversations\n")
    print("| turn 2 | TTFT ms | vs without reuse |")
    print("|---|---:|---:|")
    print(f"| with prefix reuse | {with_reuse * 1000:.0f} | {with_reuse / without:.0%} |")
    print(f"| without prefix reuse | {without * 1000:.0f} | 100% |")


if __name__ == "__main__":
    main()
