"""Starting runner processes, and one spare started ahead of need.

A runner spends about 0.3 s (on a 2-core EPYC) starting Python and importing llama.cpp, the
engine and its HTTP server before it can read which model to load (``runner/run.py``).
On a first load that work overlaps the daemon's header check; on a reload after an idle unload
it would be the larger part of the wait. So after the pool unloads a model it keeps one
*spare* runner: a process that has done its imports and waits on stdin for its handshake. The
next runner to start, for any model, takes it. A spare holds no model, only a Python process
(about 70 MB of RSS, 44 MB of it its own); ``prestart_runner = false`` turns that off.

At start the first model's runner is a spare too: started by the console script before the CLI
was imported (``head_start.py``) and adopted here, or else started first thing by the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import Protocol

from localserve.daemon.head_start import SPARE_LOG_NAME
from localserve.daemon.orphans import forget_runner, record_runner
from localserve.logs import rotate_if_large
from localserve.program import runner_command

log = logging.getLogger(__name__)

SPARE_LABEL = "(spare)"  # the model of a spare runner in its pid record
STOP_GRACE_S = 5.0
READ_LIMIT = 2**16  # the longest event line, as asyncio.subprocess reads them

__all__ = ["SPARE_LOG_NAME", "RunnerChild", "SpareRunner", "spawn_runner", "stop_process"]


class RunnerChild(Protocol):
    """What the supervisor uses of a runner process: ``asyncio.subprocess.Process``'s shape."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def stdin(self) -> asyncio.StreamWriter | None: ...
    @property
    def stdout(self) -> asyncio.StreamReader | None: ...
    async def wait(self) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class AdoptedProcess:
    """A runner started with ``subprocess.Popen`` before the event loop ran (``head_start``),
    behind asyncio streams. Its exit is awaited on a thread of its own, as asyncio's threaded
    child watcher does."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        exited: asyncio.Future[int],
    ) -> None:
        self._popen = popen
        self.stdin = stdin
        self.stdout = stdout
        self._exited = exited

    @classmethod
    async def adopt(cls, popen: subprocess.Popen[bytes]) -> AdoptedProcess:
        assert popen.stdin is not None and popen.stdout is not None
        loop = asyncio.get_running_loop()
        stdout = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stdout, loop=loop), popen.stdout
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, popen.stdin
        )
        stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        exited: asyncio.Future[int] = loop.create_future()

        def exit_code(code: int) -> None:
            if not exited.done():
                exited.set_result(code)

        def wait_for_exit() -> None:
            code = popen.wait()
            with contextlib.suppress(RuntimeError):  # the loop closed first: nobody waits
                loop.call_soon_threadsafe(exit_code, code)

        threading.Thread(target=wait_for_exit, name=f"runner-{popen.pid}", daemon=True).start()
        return cls(popen, stdin, stdout, exited)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def terminate(self) -> None:
        if not self._exited.done():
            self._popen.terminate()

    def kill(self) -> None:
        if not self._exited.done():
            self._popen.kill()


async def spawn_runner(
    log_file: Path, pid_dir: Path | None, model_id: str
) -> asyncio.subprocess.Process:
    """A new runner child, waiting for its handshake line on stdin; stderr goes to
    ``log_file`` until the handshake names another."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rotate_if_large(log_file)
    with log_file.open("ab") as log_handle:
        process = await asyncio.create_subprocess_exec(
            *runner_command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_handle,
            # Own session: the terminal's Ctrl-C goes to the daemon, which stops us in order.
            start_new_session=os.name == "posix",
        )
    if pid_dir is not None:
        record_runner(pid_dir, process.pid, model_id)
    return process


async def stop_process(process: RunnerChild, grace: float = STOP_GRACE_S) -> None:
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
    """At most one runner process started ahead, for the next model to load; after an unload
    only when ``after_unload`` (the ``prestart_runner`` setting)."""

    def __init__(self, log_file: Path, pid_dir: Path | None, after_unload: bool = True) -> None:
        self.log_file = log_file
        self.pid_dir = pid_dir
        self.after_unload = after_unload
        self._process: RunnerChild | None = None

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

    async def prepare_after_unload(self) -> None:
        if self.after_unload:
            await self.prepare()

    async def adopt(self, popen: subprocess.Popen[bytes]) -> None:
        """Take ``popen`` (``head_start``) as the spare; a second one is stopped."""
        if self.pid is not None:
            popen.kill()
            popen.wait()
            return
        rotate_if_large(self.log_file)
        self._process = await AdoptedProcess.adopt(popen)
        if self.pid_dir is not None:
            record_runner(self.pid_dir, popen.pid, SPARE_LABEL)
        log.debug("Spare runner adopted (pid %s)", popen.pid)

    def take(self, model_id: str) -> RunnerChild | None:
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
