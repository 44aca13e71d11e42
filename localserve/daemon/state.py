"""The daemon's state file: how the CLI and the tray find a running daemon (port, pid)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from localserve.security.secret_store import write_private_file


@dataclass(frozen=True)
class DaemonState:
    pid: int
    host: str
    port: int
    model: str
    version: str
    started_at: float

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def write_state(path: Path, state: DaemonState) -> None:
    write_private_file(path, json.dumps(asdict(state), indent=2) + "\n")


def remove_state(path: Path, pid: int | None = None) -> None:
    """Remove the file, but only if it still describes ``pid`` (default: this process)."""
    current = read_state(path, check_alive=False)
    if current is not None and current.pid == (pid or os.getpid()):
        path.unlink(missing_ok=True)


def read_state(path: Path, check_alive: bool = True) -> DaemonState | None:
    """The running daemon's state, or None when there is none (a stale file counts as none)."""
    try:
        state = DaemonState(**json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    if check_alive and not is_alive(state.pid):
        return None
    return state


def is_alive(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def new_state(host: str, port: int, model: str, version: str) -> DaemonState:
    return DaemonState(os.getpid(), host, port, model, version, time.time())
