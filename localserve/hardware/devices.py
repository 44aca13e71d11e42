"""What this machine can run on: CPU cores, and the GPU layers a setting asks for.

Whether llama.cpp can offload at all is a fact of the build (``llama_backends.
gpu_offload_supported``); the functions here take that answer in, so tests can cover the
CUDA/Metal branches on a CPU-only machine by passing it.
"""

from __future__ import annotations

import os

import psutil

from localserve.api.engine import EngineSettings

ALL_LAYERS = -1  # llama.cpp's "offload every layer"


def physical_cores() -> int:
    """Physical cores (hyper-threads do not speed up token generation), at least 1."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def resolve_gpu_layers(setting: str | int, gpu_offload_supported: bool) -> int:
    """Turn the ``gpu_layers`` setting into llama.cpp's ``n_gpu_layers``.

    ``auto`` offloads everything when this llama.cpp build can (CUDA, Metal, Vulkan...) and
    nothing otherwise; a number is taken as asked, except that it is 0 without GPU support so
    the log and the status say honestly that the model runs on the CPU.
    """
    if setting == "auto":
        return ALL_LAYERS if gpu_offload_supported else 0
    layers = int(setting)
    if layers < 0:
        return ALL_LAYERS if gpu_offload_supported else 0
    return layers if gpu_offload_supported else 0


def resolve_engine(settings: EngineSettings, gpu_offload_supported: bool) -> EngineSettings:
    """The engine settings with this machine's answers in place of the automatic ones: threads
    0 becomes the physical core count, gpu_layers llama.cpp's ``n_gpu_layers``. The daemon
    does this once, before a runner's engine check and start; resolving twice changes nothing."""
    return settings.model_copy(
        update={
            "threads": settings.threads or physical_cores(),
            "gpu_layers": resolve_gpu_layers(settings.gpu_layers, gpu_offload_supported),
        }
    )
