"""The fit estimate against reality: a real runner's memory after real work."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from localserve.api.engine import EngineSettings
from localserve.hardware.memory import GpuMemory, MemorySnapshot
from localserve.hub.fit import Verdict, estimate_fit
from localserve.hub.library import Library
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

GiB = 2**30
EXACT = {"LOCALSERVE_BATCH_EXACT": "true"}  # one full-context KV cache per slot


@pytest.mark.parametrize(
    ("ctx", "parallel", "env"), [(4096, 1, {}), (2048, 4, {}), (2048, 4, EXACT)]
)
def test_estimate_is_within_25_percent_of_the_runners_memory(
    tmp_path: Path, ctx: int, parallel: int, env: dict[str, str]
) -> None:
    record = Library(tmp_path / "models").get(STARTER_MODEL)
    plenty = MemorySnapshot(64 * GiB, 64 * GiB)
    # The KV cache the runner sets aside, in contexts, as the daemon's fit check counts it:
    # the shared cache is twice the context whatever the slots.
    settings = EngineSettings(ctx=ctx, parallel=parallel, batch_exact=bool(env))
    contexts = settings.kv_contexts(ctx, parallel)
    estimate = estimate_fit(record, plenty, context_length=ctx, parallel=contexts)
    args = ("--ctx", str(ctx), "--parallel", str(parallel))
    with DaemonProcess(tmp_path / "home", *args, env=env) as daemon:
        status = daemon.wait_until_model("ready")
        # Work that touches the buffers a loaded model holds: a long prompt, then an embedding.
        prompt = "The garden report, the watering schedule and the compost rotation. " * 50
        body = {"model": STARTER_MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0}
        response = httpx.post(
            f"{daemon.base_url}/completions", headers=daemon.headers(), json=body, timeout=120
        )
        assert response.status_code == 200, response.text
        body = {"model": STARTER_MODEL, "input": "hello world " * 100}
        response = httpx.post(
            f"{daemon.base_url}/embeddings", headers=daemon.headers(), json=body, timeout=60
        )
        assert response.status_code == 200, response.text
        assert status.info is not None
        rss = psutil.Process(status.pid).memory_info().rss
        measured = rss - status.info.rss_before_load_bytes
    ratio = estimate.total_bytes / measured
    print(f"estimate {estimate.total_bytes / 2**20:.0f} MiB, measured {measured / 2**20:.0f} MiB")
    assert 0.75 <= ratio <= 1.25, (estimate, measured, ratio)


def record_of_size(weights: int, layers: int = 32):  # type: ignore[no-untyped-def]
    record = Library(Path("/nonexistent")).starter_record()
    assert record is not None
    record.size_bytes = weights
    record.layers = layers
    return record


def test_verdicts_follow_free_memory() -> None:
    record = record_of_size(4 * GiB)
    cpu_only = MemorySnapshot(32 * GiB, 16 * GiB)
    assert estimate_fit(record, cpu_only).verdict is Verdict.CPU
    big_gpu = MemorySnapshot(32 * GiB, 16 * GiB, [GpuMemory(0, "GPU", 24 * GiB, 20 * GiB)])
    fit = estimate_fit(record, big_gpu)
    assert fit.verdict is Verdict.GPU and fit.gpu_layers == 32
    small_gpu = MemorySnapshot(32 * GiB, 16 * GiB, [GpuMemory(0, "GPU", 4 * GiB, 2 * GiB)])
    fit = estimate_fit(record, small_gpu)
    assert fit.verdict is Verdict.PARTIAL and 0 < fit.gpu_layers < 32
    assert "of 32 layers" in fit.describe()
    # A CPU-only build of llama.cpp cannot use the GPU it sees.
    assert estimate_fit(record, big_gpu, gpu_offload_supported=False).verdict is Verdict.CPU
    tiny = MemorySnapshot(8 * GiB, 2 * GiB)
    assert estimate_fit(record, tiny).verdict is Verdict.TOO_LARGE


def test_kv_cache_grows_with_context_and_slots() -> None:
    record = record_of_size(GiB)
    plenty = MemorySnapshot(64 * GiB, 64 * GiB)
    small = estimate_fit(record, plenty, context_length=2048)
    large = estimate_fit(record, plenty, context_length=8192)
    slots = estimate_fit(record, plenty, context_length=2048, parallel=4)
    assert large.kv_cache_bytes > 3 * small.kv_cache_bytes
    assert slots.kv_cache_bytes > 3 * small.kv_cache_bytes
    assert large.weights_bytes == small.weights_bytes
