"""Free memory where a model could go: system RAM (psutil) and each NVIDIA GPU's VRAM (NVML).

NVML is optional (``pip install nvidia-ml-py``); without it, or without an NVIDIA driver, the
GPU list is empty and estimates fall back to RAM. Apple Silicon shares RAM with its GPU, so RAM
is the budget there too.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class MemorySnapshot:
    ram_total_bytes: int
    ram_free_bytes: int  # "available": free plus reclaimable cache
    gpus: list[GpuMemory] = field(default_factory=list)


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver could answer NVML here, asked without NVML: importing pynvml
    alone takes 25 ms of a daemon's start, spent for nothing on most machines. On Linux the
    driver shows itself in /proc/driver/nvidia (inside containers too), and WSL's GPU in
    /dev/dxg; macOS has no NVIDIA driver; elsewhere only NVML can tell."""
    system: str = sys.platform  # a plain str: mypy would judge one branch unreachable
    if system.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/dxg")
    return system != "darwin"


def nvidia_gpus() -> list[GpuMemory]:
    if not nvidia_driver_present():
        return []
    try:
        nvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return []
    try:
        nvml.nvmlInit()
    except Exception:  # no driver, no device: NVML raises its own error types
        return []
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            gpus.append(GpuMemory(index, name, int(info.total), int(info.free)))
        return gpus
    finally:
        nvml.nvmlShutdown()


def sample_memory() -> MemorySnapshot:
    ram = psutil.virtual_memory()
    return MemorySnapshot(int(ram.total), int(ram.available), nvidia_gpus())
