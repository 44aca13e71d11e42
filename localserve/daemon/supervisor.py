"""Runner child processes: start one, keep it alive, stop it.

``RunnerProcess`` is one child's lifetime (spawn, handshake, stop); ``Supervisor`` is the policy
for one model: a runner that dies after it was ready is restarted with exponential backoff, until
it has died ``CrashPolicy.limit`` times within ``window`` seconds (a crash loop: the model is then
marked failed, with the end of its log); a runner that cannot load its model is not restarted
(the file will not fix itself), and the failure is kept so requests get a clear error. No Qt
here: headless daemons get the same policy as the tray.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from localserve.api.engine import EngineSettings
from localserve.api.runner import (
    LLAMA_DEFAULTS,
    EnginePath,
    RunnerConfig,
    RunnerEndpoint,
)
from localserve.api.runner_events import EVENT_CHECKING, EVENT_READY, EXIT_RESPAWN
from localserve.daemon.engine_path import (
    EngineChoice,
    VerdictStore,
    choose_engine_path,
    crash_signal,
    kernel_names,
    record_trial,
)
from localserve.daemon.orphans import forget_runner
from localserve.daemon.spare import RunnerChild, SpareRunner, spawn_runner, stop_process
from localserve.errors import BackendUnavailableError, InvalidModelFileError, ModelLoadError
from localserve.hub.gguf_check import check_model_file
from localserve.hub.gguf_header import read_gguf_header
from localserve.logs import rotate_if_large, tail
from localserve.runner.commands import COMMAND_THREADS, command_line
from localserve.runner.reporting import EVENT_REQUEST, EVENT_THREADS, EVENT_TICK

log = logging.getLogger(__name__)

EventHandler = Callable[[str, dict[str, Any]], None]  # (model id, event)

INITIAL_BACKOFF_S = 0.25
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0
STOP_GRACE_S = 5.0
LOG_TAIL_LINES = 5


@dataclass(frozen=True)
class CrashPolicy:
    """Give up on a runner that died ``limit`` times within ``window`` seconds."""

    limit: int = 5
    window: float = 600.0


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last non-blank lines of a runner's log (its stderr), for failure reports."""
    try:
        recent = tail(path, lines * 4)
    except OSError:
        return ""
    return "\n".join([line for line in recent if line.strip()][-lines:])


class RunnerState(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass(frozen=True)
class RunnerSpec:
    model_id: str
    model_path: Path
    engine: EngineSettings  # resolved (hardware.devices.resolve_engine); the runner gets it as is
    log_file: Path
    log_level: str = "info"
    pid_dir: Path | None = None  # where the runner's pid file lives while it runs (orphans.py)
    engine_checks_file: Path | None = None  # None: no engine check (llama.cpp's defaults)
    model_checks_file: Path | None = None  # header verdicts kept across launches; None: memory
    mmproj_path: Path | None = None  # the model's vision projector, if it has one
    chat_template: str | None = None  # the model preset's template, in place of the file's
    keep_alive: float | None = None  # the model preset's; None: the pool's (the setting)
    quant_type: str | None = None  # the weights' type, from the library record; None: read it


@dataclass
class SupervisorStatus:
    model_id: str
    state: RunnerState
    restarts: int = 0
    last_error: str | None = None
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def ignore(model_id: str, event: dict[str, Any]) -> None:
    pass


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class RunnerProcess:
    """One runner child process."""

    def __init__(
        self,
        spec: RunnerSpec,
        spare: SpareRunner | None = None,
        on_underway: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self._spare = spare
        self._on_underway = on_underway  # the daemon's part of the start is done
        self._process: RunnerChild | None = None
        self._threads = spec.engine.threads  # granted last
        self._threads_in_use = spec.engine.threads  # reported applied by the batch loop
        self._threads_changed = asyncio.Event()
        self.engine_path: EnginePath | None = None
        self.handshake: RunnerConfig | None = None  # as sent
        self.decoded = False  # set by the first report of generated or prompt tokens

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, timeout: float) -> RunnerEndpoint:
        """Take the spare runner or spawn one, check the model file meanwhile, send the
        handshake and wait for the ``ready`` line; ModelLoadError otherwise.

        With no engine verdict yet, the path is a trial: the runner runs the engine check's
        decodes itself. Its pass is kept as the verdict; its crash is charged to the path, and
        one more start follows, on a path the engine check's children choose."""
        spec = self.spec
        spare = self._spare.take(spec.model_id) if self._spare is not None else None
        self._process = spare or await spawn_runner(spec.log_file, spec.pid_dir, spec.model_id)
        try:
            self.engine_path = engine_path = await self._checked_engine_path()
        except BaseException:
            await self.stop()
            raise
        token = secrets.token_urlsafe(32)
        config = RunnerConfig(
            model_path=str(spec.model_path),
            model_id=spec.model_id,
            token=token,
            engine=spec.engine,
            engine_path=engine_path,
            log_level=spec.log_level,
            log_file=str(spec.log_file) if spare is not None else None,
            mmproj_path=str(spec.mmproj_path) if spec.mmproj_path else None,
            chat_template=spec.chat_template,
        )
        self.handshake = config
        if spare is not None:
            rotate_if_large(spec.log_file)
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(ConnectionError):  # a runner already gone says so below
            process.stdin.write(config.to_line())
            await process.stdin.drain()
        self._underway()
        verdicts = VerdictStore(spec.engine_checks_file) if spec.engine_checks_file else None
        lock_ready: asyncio.Task[Any] | None = None
        if engine_path.trial and verdicts is not None:
            # Keeping the trial's verdict takes its lock's module (15 ms to import): imported
            # on a thread while the runner loads, not on the loop once it is ready.
            lock_ready = asyncio.create_task(asyncio.to_thread(lambda: verdicts.lock))
        deadline = time.monotonic() + timeout
        ranked: list[str] | None = None
        while True:
            try:
                line = await asyncio.wait_for(
                    process.stdout.readline(), max(0.0, deadline - time.monotonic())
                )
            except asyncio.TimeoutError:
                await self.stop()
                raise ModelLoadError(
                    f"{spec.model_id} did not load within {timeout:.0f} s (see {spec.log_file})."
                ) from None
            event = self._parse(line)
            if event.get("event") != EVENT_CHECKING:
                break
            # A trial path's runner says which CPU variant it resolved before it checks: a
            # crash from here on is charged to that one.
            variant = event.get("cpu_variant")
            self.engine_path = engine_path = dataclasses.replace(
                engine_path, cpu_variant=str(variant) if variant else None
            )
            ranked = [str(name) for name in event.get("ranked") or []] or None
        if event.get("event") != EVENT_READY:
            code = await process.wait()
            self._forget()
            if code == EXIT_RESPAWN:  # it loaded another CPU variant ahead: a new process
                log.info("The runner for %s asked for a new process; starting one.", spec.model_id)
                return await self.start(timeout)
            crash = crash_signal(code)
            if engine_path.trial and crash and verdicts is not None:
                verdicts.record_crash(engine_path, crash, ranked)
                log.warning(
                    "The runner for %s died of %s in its engine check, with %s; trying the "
                    "next way to run llama.cpp.",
                    spec.model_id,
                    crash,
                    kernel_names((engine_path.cpu_variant, engine_path.extra_buffers)),
                )
                return await self.start(timeout)  # the crash is recorded: the next path
            message = event.get("message") or (
                f"The runner for {spec.model_id} stopped while loading ({describe_exit(code)}); "
                f"see {spec.log_file}."
            )
            raise ModelLoadError(message)
        info = dict(event.get("info") or {})
        if engine_path.trial and verdicts is not None:
            quant_type, choice = self._check_inputs()
            if lock_ready is not None:
                await lock_ready
            verdict = record_trial(verdicts, engine_path, quant_type, choice, ranked)
            self.engine_path = verdict
            info["engine_note"] = verdict.note
        return RunnerEndpoint(
            base_url=f"http://127.0.0.1:{int(event['port'])}",
            token=token,
            info=info,
            pid=process.pid,
        )

    def next_handshake(self) -> RunnerConfig | None:
        """The handshake a new runner of this model would get now, but for its token: the one
        sent last, with the engine path as checked since; None before one was sent."""
        if self.handshake is None or self.engine_path is None:
            return None
        return self.handshake.model_copy(update={"token": "", "engine_path": self.engine_path})

    def _underway(self) -> None:
        if self._on_underway is not None:
            self._on_underway()

    async def _checked_engine_path(self) -> EnginePath:
        """The model file's header check (in a time- and memory-limited child, before
        llama.cpp ever opens the file) and the engine check's verdict, side by side."""
        spec = self.spec
        header = asyncio.create_task(
            asyncio.to_thread(
                check_model_file, spec.model_path, verdicts_file=spec.model_checks_file
            )
        )
        loop = asyncio.get_running_loop()

        def checking() -> None:  # on the worker thread
            loop.call_soon_threadsafe(self._underway)

        engine_path = asyncio.create_task(asyncio.to_thread(self._engine_path, checking))
        try:
            await header
        except InvalidModelFileError as exc:
            raise ModelLoadError(str(exc)) from exc
        finally:
            if not header.done() or header.exception() is not None:
                engine_path.cancel()
        return await engine_path

    def _engine_path(self, on_check: Callable[[], None]) -> EnginePath:
        """How the runner will use llama.cpp: the engine check's verdict (engine_path.py);
        ``on_check`` is called first when an engine check has to run for it."""
        spec = self.spec
        if spec.engine_checks_file is None:
            return LLAMA_DEFAULTS
        quant_type, choice = self._check_inputs()
        return choose_engine_path(
            spec.model_path,
            quant_type,
            choice,
            VerdictStore(spec.engine_checks_file),
            on_check=on_check,
            trial=True,  # this runner can check a path itself (start)
        )

    def _check_inputs(self) -> tuple[str, EngineChoice]:
        """The weights' type and the engine choice: what an engine verdict is about."""
        spec = self.spec
        engine = spec.engine
        choice = EngineChoice(
            weight_repack=engine.weight_repack,
            cpu_variant=engine.cpu_variant,
            gpu_layers=engine.n_gpu_layers,
            threads=engine.threads,
        )
        # The header was checked sound just before; the library's record saves reading it.
        quant_type = spec.quant_type or read_gguf_header(spec.model_path).quant_type
        return quant_type, choice

    def crash_diagnosis(self, code: int) -> str | None:
        """Why a runner that died of ``code`` did, when llama.cpp's kernels are the likely
        cause: it died of a crash signal before any decode finished. The path it ran is
        charged, so the next start is checked again without it."""
        path = self.engine_path
        if self.decoded or path is None or crash_signal(code) is None:
            return None
        if self.spec.engine_checks_file is not None:
            VerdictStore(self.spec.engine_checks_file).record_crash(path)
        kernels = kernel_names((path.cpu_variant, path.extra_buffers))
        return (
            f"It died before its first decode finished: llama.cpp's {kernels} crash on this "
            "CPU with this model. The next start checks the engine again without them."
        )

    def grant_threads(self, threads: int) -> bool:
        """Tell the running child how many CPU threads it may use from now on; True when
        that is fewer than it was allowed before."""
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            return False
        if threads == self._threads or process.stdin.is_closing():
            return False
        fewer = threads < self._threads
        self._threads = threads
        process.stdin.write(command_line(COMMAND_THREADS, threads=threads))
        return fewer

    async def threads_applied(self, timeout: float) -> bool:
        """Wait until the batch loop uses the count granted last (it applies a grant before its
        next decode step); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._threads_in_use != self._threads:
            self._threads_changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._threads_changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any]:
        try:
            event = json.loads(line) if line else {}
        except ValueError:
            return {}
        return event if isinstance(event, dict) else {}

    async def read_events(self, on_event: EventHandler) -> None:
        """Pass each JSON line the ready runner writes (reports) to ``on_event`` until EOF."""
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            event = self._parse(line)
            if event.get("event") in (EVENT_TICK, EVENT_REQUEST):
                self.decoded = True
            if event.get("event") == EVENT_THREADS:
                self._threads_in_use = int(event.get("threads") or 0)
                self._threads_changed.set()
            elif event:
                try:
                    on_event(self.spec.model_id, event)
                except Exception:  # a telemetry bug must not stop the reading (and the runner)
                    log.exception("Could not handle a runner event")

    async def wait(self) -> int:
        assert self._process is not None
        code = await self._process.wait()
        self._forget()
        return code

    def _forget(self) -> None:
        if self.spec.pid_dir is not None and self._process is not None:
            forget_runner(self.spec.pid_dir, self._process.pid)

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        await stop_process(process, STOP_GRACE_S)
        self._forget()


class Supervisor:
    """Keeps the runner of one model alive."""

    def __init__(
        self,
        spec: RunnerSpec,
        start_timeout: float,
        on_event: EventHandler | None = None,
        crash_policy: CrashPolicy | None = None,
        spare: SpareRunner | None = None,
    ) -> None:
        self.spec = spec
        self._spare = spare
        self._start_timeout = start_timeout
        self._crash_policy = crash_policy or CrashPolicy()
        self._crashes: deque[float] = deque()
        self._on_event = on_event
        self._state = RunnerState.STOPPED
        self._changed = asyncio.Condition()
        self._endpoint: RunnerEndpoint | None = None
        self._process: RunnerProcess | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._underway = asyncio.Event()
        self.restarts = 0
        self.last_error: str | None = None

    @property
    def state(self) -> RunnerState:
        return self._state

    def status(self) -> SupervisorStatus:
        return SupervisorStatus(
            model_id=self.spec.model_id,
            state=self._state,
            restarts=self.restarts,
            last_error=self.last_error,
            pid=self._endpoint.pid if self._endpoint else None,
            info=self._endpoint.info if self._endpoint else {},
        )

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stop_requested.clear()
            self._state = RunnerState.STARTING  # so a request arriving now waits for it
            self._task = asyncio.create_task(
                self._keep_alive(), name=f"runner:{self.spec.model_id}"
            )

    async def ready(self, timeout: float) -> RunnerEndpoint:
        """The endpoint of the ready runner, waiting up to ``timeout`` while it (re)starts."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                if self._state is RunnerState.READY and self._endpoint is not None:
                    return self._endpoint
                if self._state is RunnerState.FAILED:
                    raise ModelLoadError(self.last_error or f"{self.spec.model_id} failed to load.")
                if self._state is RunnerState.STOPPED:
                    raise BackendUnavailableError(
                        f"The model '{self.spec.model_id}' is not loaded."
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackendUnavailableError(
                        f"The model '{self.spec.model_id}' is still {self._state.value}; "
                        "try again shortly."
                    )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def underway(self, timeout: float) -> bool:
        """Wait until the daemon's part of starting this model's runner is done: it was sent
        its handshake (the model is loading), or an engine check child runs before that, or it
        failed; False after ``timeout``. From then on, work on the daemon's event loop or GIL no
        longer holds the runner back."""
        if self._state is RunnerState.FAILED:
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._underway.wait(), timeout)
        return self._underway.is_set()

    def grant_threads(self, threads: int) -> bool:
        """The CPU threads the runner may use while it is busy (``ModelPool._share_cpu``);
        True when that is fewer than before."""
        return self._process is not None and self._process.grant_threads(threads)

    async def threads_applied(self, timeout: float) -> bool:
        """True once the runner uses the count granted last; False after ``timeout``."""
        return self._process is None or await self._process.threads_applied(timeout)

    def runner_lost(self, endpoint: RunnerEndpoint) -> None:
        """A request found the runner gone; stop routing to it before its exit is reaped."""
        if self._endpoint is endpoint and self._state is RunnerState.READY:
            self._endpoint = None
            self._state = RunnerState.RESTARTING

    def next_handshake(self) -> RunnerConfig | None:
        """The handshake the next runner of this model would get but for its token, once
        one was sent (``RunnerProcess.next_handshake``)."""
        return self._process.next_handshake() if self._process is not None else None

    async def stop(self) -> None:
        self._stop_requested.set()
        if self._process is not None:
            await self._process.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._set_state(RunnerState.STOPPED)

    async def _set_state(self, state: RunnerState, endpoint: RunnerEndpoint | None = None) -> None:
        async with self._changed:
            self._state = state
            self._endpoint = endpoint
            self._changed.notify_all()

    def _crash_loop(self) -> bool:
        """Count this crash; True when the runner died too often lately to restart it."""
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self._crash_policy.window:
            self._crashes.popleft()
        return len(self._crashes) >= self._crash_policy.limit

    async def _keep_alive(self) -> None:
        backoff = INITIAL_BACKOFF_S
        # A runner started after a crash stays "restarting" until it is ready, so the tray and
        # status show the whole recovery, not only the backoff between the two.
        state = RunnerState.STARTING
        while not self._stop_requested.is_set():
            await self._set_state(state)
            self._process = RunnerProcess(self.spec, self._spare, self._underway.set)
            try:
                endpoint = await self._process.start(self._start_timeout)
            except ModelLoadError as exc:
                self.last_error = str(exc)
                log.error("Model %s failed to load: %s", self.spec.model_id, exc)
                await self._set_state(RunnerState.FAILED)
                self._underway.set()  # nobody waits for a handshake that will not come
                return
            log.info("Runner for %s ready (pid %s)", self.spec.model_id, endpoint.pid)
            await self._set_state(RunnerState.READY, endpoint)
            started = time.monotonic()
            # Always drain stdout: a runner writing reports into a full pipe would block.
            reader = asyncio.create_task(self._process.read_events(self._on_event or ignore))
            try:
                code = await self._process.wait()
            finally:
                reader.cancel()
            if self._stop_requested.is_set():
                return
            self.last_error = f"The runner for {self.spec.model_id} died ({describe_exit(code)})."
            diagnosis = self._process.crash_diagnosis(code)
            if diagnosis:
                self.last_error += " " + diagnosis
            if self._crash_loop():
                tail = log_tail(self.spec.log_file)
                self.last_error = (
                    f"{self.last_error} It died {len(self._crashes)} times within "
                    f"{self._crash_policy.window:.0f} s, so it is not restarted again; load the "
                    f"model to try again. Its log ({self.spec.log_file}) ends:\n{tail}"
                )
                log.error("%s", self.last_error)
                await self._set_state(RunnerState.FAILED)
                return
            self.restarts += 1
            if time.monotonic() - started > STABLE_AFTER_S:
                backoff = INITIAL_BACKOFF_S
            log.warning("%s Restarting in %.2f s.", self.last_error, backoff)
            state = RunnerState.RESTARTING
            await self._set_state(state)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
