"""How to run this program again: the daemon's launcher and the login autostart entry both
start localserve as a new process, from a pip install or from the packaged app."""

from __future__ import annotations

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
