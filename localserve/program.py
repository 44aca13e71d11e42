"""How to run this program again: the daemon's launcher and the login autostart entry both
start localserve as a new process, from a pip install or from the packaged app."""

from __future__ import annotations

import gc
import os
import sys


def localserve_command() -> list[str]:
    """How to run this program's CLI again (a frozen app is its own executable)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "localserve"]


def runner_command() -> list[str]:
    """How to start a runner child process (``localserve.runner``; a frozen app accepts the
    same ``-m`` form for it, ``frozen.py``)."""
    return [sys.executable, "-m", "localserve.runner"]


def lean_start_environment() -> None:
    """Set before pydantic and numpy are imported, here and (inherited) in child processes; a
    value the user set is kept.

    - ``OPENBLAS_NUM_THREADS=1``: numpy (llama_cpp imports it) starts OpenBLAS with a thread
      per core, and they spin while they wait for work: 0.1 s of CPU taken from a model's
      load and the daemon's start-up on a 2-core machine. Runners use numpy for small copies,
      never for BLAS.
    - ``PYDANTIC_DISABLE_PLUGINS=1``: pydantic otherwise reads every installed package's entry
      points (about 5 ms) when it builds its first model, looking for plugins this program
      does not use.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")


def pause_garbage_collection() -> None:
    """For a start-up: importing creates a few hundred thousand objects that live as long as
    the process, and the cyclic collector, run every few hundred allocations, walks them again
    and again for nothing: 10 to 18 % of the daemon's and a runner's import time here. Resumed
    once they serve (``resume_garbage_collection``)."""
    gc.disable()


def resume_garbage_collection() -> None:
    """Once serving: freeze what start-up made (later full collections skip it), collect again."""
    gc.freeze()
    gc.enable()
