"""What this machine can run on: CPU cores and whether llama.cpp can offload to a GPU.

These are the detection seams: the rest of the code asks these functions, so tests can cover the
CUDA/Metal branches on a CPU-only machine by passing the answer in.
"""

from __future__ import annotations

import functools
import logging
import os

import psutil

log = logging.getLogger(__name__)

ALL_LAYERS = -1  # llama.cpp's "offload every layer"


def physical_cores() -> int:
    """Physical cores (hyper-threads do not speed up token generation), at least 1."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


@functools.cache
def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, Vulkan...).

    Asks llama.cpp itself, so it imports ``llama_cpp`` (its shared library) on first call.
    """
    import llama_cpp

    from localserve.runner.llama_backends import BackendLoadError, load_gpu_backends

    try:
        load_gpu_backends()  # a build whose GPU backend is a separate library (GGML_BACKEND_DL)
    except BackendLoadError as exc:
        log.warning("GPU offload unavailable: %s", exc)
    return bool(llama_cpp.llama_supports_gpu_offload())


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
