"""VRAM through NVML: the real library where no driver is loaded, and the reading code through a
stand-in module (the seam: this machine has no GPU; docs/benchmarks.md has an H100's figures)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from localserve.hardware import memory
from localserve.hardware.memory import GpuMemory, nvidia_gpus


@pytest.fixture
def driver_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in pynvml modules below answer as a loaded driver would."""
    monkeypatch.setattr(memory, "nvidia_driver_present", lambda: True)


def test_nvml_without_a_driver_reports_no_gpu_and_does_not_raise(
    driver_present: None,
) -> None:
    pytest.importorskip("pynvml")
    if Path("/proc/driver/nvidia/gpus").exists():
        pytest.skip("an NVIDIA driver is loaded on this machine")
    assert nvidia_gpus() == []


def test_without_a_driver_nvml_is_not_even_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """No driver to answer: pynvml's import (25 ms of each daemon start) is skipped."""
    monkeypatch.setattr(memory, "nvidia_driver_present", lambda: False)
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    assert nvidia_gpus() == []
    assert "pynvml" not in sys.modules


def test_each_gpu_is_read_with_its_name_and_memory(
    monkeypatch: pytest.MonkeyPatch, driver_present: None
) -> None:
    calls: list[str] = []

    class Info:
        def __init__(self, total: int, free: int) -> None:
            self.total, self.free = total, free

    cards = [
        (b"NVIDIA H100 80GB HBM3", Info(85_520_809_984, 85_014_085_632)),
        ("RTX 4090", Info(8, 2)),
    ]
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: len(cards)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda handle: cards[handle][0]  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda handle: cards[handle][1]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    assert nvidia_gpus() == [
        GpuMemory(0, "NVIDIA H100 80GB HBM3", 85_520_809_984, 85_014_085_632),
        GpuMemory(1, "RTX 4090", 8, 2),
    ]
    assert calls == ["init", "shutdown"]


def test_a_driver_that_refuses_means_no_gpu(
    monkeypatch: pytest.MonkeyPatch, driver_present: None
) -> None:
    class NVMLError(Exception):
        pass

    def refuse() -> None:
        raise NVMLError("Driver Not Loaded")

    fake = types.ModuleType("pynvml")
    fake.nvmlInit = refuse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert nvidia_gpus() == []
