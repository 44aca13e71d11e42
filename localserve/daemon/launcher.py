"""Start and stop the daemon as a background process (the tray's Start/Stop serving)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time

import psutil

from localserve.daemon.state import DaemonState, is_alive, read_state
from localserve.errors import LocalserveError
from localserve.paths import AppPaths


def localserve_command() -> list[str]:
    """How to run this program's CLI again (a frozen app is its own executable)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "localserve"]


def start_daemon(paths: AppPaths) -> subprocess.Popen[bytes]:
    """Launch ``localserve serve`` detached from this process (closing the tray keeps it)."""
    paths.ensure()
    with (paths.log_dir / "daemon-console.log").open("ab") as console:
        process = subprocess.Popen(
            [*localserve_command(), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=os.name == "posix",
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
        )
    # Reap it when it exits (no zombie while the tray runs on).
    threading.Thread(target=process.wait, name="daemon-reaper", daemon=True).start()
    return process


def stop_daemon(paths: AppPaths, timeout: float = 20.0) -> DaemonState | None:
    """Stop the running daemon and wait for it to exit; None when none was running."""
    state = read_state(paths.state_file)
    if state is None:
        return None
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(state.pid).terminate()
    deadline = time.monotonic() + timeout
    while is_alive(state.pid):  # a zombie counts as stopped: it is its parent's to reap
        if time.monotonic() > deadline:
            raise LocalserveError(
                f"localserve (pid {state.pid}) did not stop within {timeout:.0f} s; "
                f"see {paths.daemon_log}."
            )
        time.sleep(0.1)
    return state
