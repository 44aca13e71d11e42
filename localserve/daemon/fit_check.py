"""The fit check before a runner starts: the model's fit estimate against the memory free now.

A model that cannot fit is refused with the numbers instead of pushing the machine into swap.
The pool checks twice: first counting the memory that unloading idle runners would give back
(so it refuses before it unloads any of them), then again after making room.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable

import psutil

from localserve.errors import ModelTooLargeError
from localserve.hardware.memory import MemorySnapshot, sample_memory
from localserve.hub.fit import Verdict, estimate_fit
from localserve.hub.library import ModelRecord
from localserve.units import format_bytes


def free_memory(reclaimable: int = 0) -> MemorySnapshot:
    """The memory free right now, plus ``reclaimable`` bytes of RAM."""
    sampled = sample_memory()
    return dataclasses.replace(sampled, ram_free_bytes=sampled.ram_free_bytes + reclaimable)


def resident_bytes(pids: Iterable[int]) -> int:
    """The RSS of these processes together (one that is gone counts nothing)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def check_fit(
    record: ModelRecord,
    memory: MemorySnapshot,
    context_length: int | None,
    parallel: int,
    gpu_offload: bool,
    kv_scale: float = 1.0,
) -> None:
    """Raise ``ModelTooLargeError``, with the estimate's numbers, unless the model fits."""
    fit = estimate_fit(record, memory, context_length, parallel, gpu_offload, kv_scale)
    if fit.verdict is Verdict.TOO_LARGE:
        raise ModelTooLargeError(
            f"{record.name} needs about {format_bytes(fit.total_bytes)} "
            f"(weights {format_bytes(fit.weights_bytes)}, KV cache "
            f"{format_bytes(fit.kv_cache_bytes)}) but only "
            f"{format_bytes(memory.ram_free_bytes)} of RAM is free or reclaimable. "
            "Unload other models, lower ctx, or pick a smaller quant."
        )
