"""Start and stop the daemon as a background process (the tray's Start/Stop serving)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from localserve.daemon.state import DaemonState, is_alive, read_state
from localserve.errors import LocalserveError
from localserve.paths import AppPaths
from localserve.program import localserve_command


@dataclass
class Launch:
    """A daemon this process started, and where its console output went."""

    process: subprocess.Popen[bytes]
    console_log: Path
    console_offset: int  # the log's size before this launch: later bytes are this launch's

    def failure(self) -> str | None:
        """Why the daemon exited before serving (its last console line), or None if it runs."""
        status = self.process.poll()
        if status is None:
            return None
        try:
            with self.console_log.open("rb") as console:
                console.seek(self.console_offset)
                output = console.read().decode("utf-8", errors="replace")
        except OSError:
            output = ""
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        return lines[-1] if lines else f"localserve serve exited with status {status}."


def start_daemon(paths: AppPaths) -> Launch:
    """Launch ``localserve serve`` detached from this process (closing the tray keeps it)."""
    paths.ensure()
    console_log = paths.log_dir / "daemon-console.log"
    with console_log.open("ab") as console:
        offset = console.tell()
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
    return Launch(process, console_log, offset)


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
