"""Starting runner processes, and one spare started ahead of need.

A runner spends about 0.3 s (on a 2-core EPYC) starting Python and importing llama.cpp, the
engine and its HTTP server before it can read which model to load (``runner/__main__.py``).
On a first load that work overlaps the daemon's header check; on a reload after an idle unload
it would be the larger part of the wait. So after the pool unloads a model it keeps one
*spare* runner: a process that has done its imports and waits on stdin for its handshake. The
next runner to start, for any model, takes it. A spare holds no model, only a Python process
(about 70 MB of RSS, 44 MB of it its own); ``prestart_runner = false`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from localserve.daemon.orphans import forget_runner, record_runner
from localserve.logs import rotate_if_large

log = logging.getLogger(__name__)

SPARE_LABEL = "(spare)"  # the model of a spare runner in its pid record
SPARE_LOG_NAME = "spare-runner.log"  # its log (in the logs folder) until it has a model
STOP_GRACE_S = 5.0


async def spawn_runner(
    log_file: Path, pid_dir: Path | None, model_id: str
) -> asyncio.subprocess.Process:
    """A new runner child, waiting for its handshake line on stdin; stderr goes to
    ``log_file`` until the handshake names another."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rotate_if_large(log_file)
    with log_file.open("ab") as log_handle:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "localserve.runner",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_handle,
            # Own session: the terminal's Ctrl-C goes to the daemon, which stops us in order.
            start_new_session=os.name == "posix",
        )
    if pid_dir is not None:
        record_runner(pid_dir, process.pid, model_id)
    return process


async def stop_process(process: asyncio.subprocess.Process, grace: float = STOP_GRACE_S) -> None:
    """Close its stdin, SIGTERM, and SIGKILL after ``grace`` seconds."""
    if process.returncode is not None:
        return
    if process.stdin is not None:
        process.stdin.close()
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


class SpareRunner:
    """At most one runner process started ahead, for the next model to load."""

    def __init__(self, log_file: Path, pid_dir: Path | None) -> None:
        self.log_file = log_file
        self.pid_dir = pid_dir
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def prepare(self) -> None:
        """Start the spare unless one is waiting already."""
        if self.pid is not None:
            return
        try:
            self._process = await spawn_runner(self.log_file, self.pid_dir, SPARE_LABEL)
        except OSError as exc:  # only a head start: the next load spawns its own
            log.warning("Could not start a spare runner: %s", exc)
            self._process = None
            return
        log.debug("Spare runner started (pid %s)", self._process.pid)

    def take(self, model_id: str) -> asyncio.subprocess.Process | None:
        """The waiting spare, now the runner of ``model_id``; None when there is none (or it
        died meanwhile: a crash while importing shows in the spare's log)."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return None
        if self.pid_dir is not None:
            record_runner(self.pid_dir, process.pid, model_id)
        return process

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        await stop_process(process)
        if self.pid_dir is not None:
            forget_runner(self.pid_dir, process.pid)
