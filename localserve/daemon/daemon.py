"""The daemon: one run of `localserve serve`, from binding the port to stopping the runners.

Cold start matters (launch to first token): the first runner process was started by the
console script before anything else (``head_start.py``), or is spawned here first thing; the
daemon imports only what the model pool needs, and the gateway (``gateway.py``, the heavier
imports) is built while that runner loads its model.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

from localserve import __version__, logs
from localserve.api.engine import EngineSettings
from localserve.api.presets import engine_for
from localserve.asgi.serving import bind_socket, run_async
from localserve.config import Settings
from localserve.config.preset_store import PresetStore
from localserve.daemon.head_start import FirstRunnerMemory
from localserve.daemon.orphans import stop_orphan_runners
from localserve.daemon.pool import ModelPool, PoolLimits
from localserve.daemon.spare import SPARE_LOG_NAME, SpareRunner
from localserve.daemon.state import DaemonState, new_state, read_state, remove_state, write_state
from localserve.daemon.supervisor import CrashPolicy, RunnerSpec, Supervisor
from localserve.daemon.telemetry import Telemetry
from localserve.errors import ConfigError, LocalserveError
from localserve.hardware.devices import resolve_engine
from localserve.hub.library import Library
from localserve.hub.resolve import ResolvedModel
from localserve.paths import AppPaths
from localserve.program import resume_garbage_collection
from localserve.runner.llama_backends import build_id, gpu_offload_supported

if TYPE_CHECKING:
    from localserve.daemon.gateway import GatewayServer, Services

log = logging.getLogger(__name__)

UNDERWAY_WAIT_S = 5.0  # at most this long does the gateway wait for the first runner's handshake
WHOLE_RECORD_DELAY_S = 1.0  # after the first model is ready: its first answer comes first

REMOTE_ACCESS_HINT = (
    "The main listener is loopback only (127.0.0.1, ::1, localhost). To reach localserve from "
    "other devices turn on remote access: `localserve remote on` (TLS, per-device keys)."
)


def check_loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"'{host}' is not an IP address. {REMOTE_ACCESS_HINT}") from None
    if not address.is_loopback:
        raise ConfigError(f"Refusing to listen on {host}. {REMOTE_ACCESS_HINT}")
    return host


class Daemon:
    def __init__(
        self,
        settings: Settings,
        paths: AppPaths,
        model: ResolvedModel,
        on_listening: Callable[[DaemonState], None] | None = None,
        first_runner: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.model = model
        self._on_listening = on_listening
        self._first_runner = first_runner  # started by the console script (head_start.py)
        self.presets = PresetStore(paths.config_file, settings.models)

    @functools.cached_property
    def engine(self) -> EngineSettings:
        """The engine settings with "auto" decided, once, for every runner and for the
        CPU-thread split (``gpu_offload_supported`` loads libllama only for a build that may
        offload)."""
        return resolve_engine(self.settings.engine, gpu_offload_supported())

    def runner_spec(self, model: ResolvedModel) -> RunnerSpec:
        preset = self.presets.get(model.model_id)
        engine = engine_for(self.settings.engine, preset)
        return RunnerSpec(
            model_id=model.model_id,
            model_path=model.path,
            engine=self.engine
            if engine is self.settings.engine
            else resolve_engine(engine, gpu_offload_supported()),
            log_file=self.paths.runner_log(model.model_id),
            log_level=self.settings.log_level,
            pid_dir=self.paths.runner_pid_dir,
            engine_checks_file=self.paths.engine_checks_file,
            model_checks_file=self.paths.model_checks_file,
            mmproj_path=model.mmproj,
            chat_template=preset.chat_template if preset else None,
            keep_alive=preset.keep_alive if preset else None,
        )

    async def run(self) -> None:
        """Serve until SIGINT/SIGTERM, then stop the runners and remove the state file."""
        host = check_loopback_host(self.settings.host)
        self._refuse_a_second_daemon()
        spare = self._spare()
        if self._first_runner is not None:
            await spare.adopt(self._first_runner)
        else:  # first of all: the first model's runner starts booting now
            await spare.prepare()
        sock = bind_socket(host, self.settings.port)
        state = new_state(host, sock.getsockname()[1], self.model.model_id, __version__)
        telemetry = Telemetry(lambda: pool.in_flight(), lambda: pool.runner_pids())
        pool = self._pool(telemetry, spare)
        try:
            supervisor = await pool.load(self.model.model_id)
            # Import the gateway while the runner loads its model (or an engine check runs),
            # once the daemon has sent it the handshake: importing earlier competes with that
            # work for the GIL, and on the event loop it would hold it back altogether.
            await supervisor.underway(UNDERWAY_WAIT_S)
            await asyncio.to_thread(import_module, "localserve.daemon.gateway")
            from localserve.daemon import gateway

            services = gateway.build_services(
                self.settings, self.paths, state, pool, telemetry, self.presets
            )
        except BaseException:
            await pool.stop_all()  # the spare too
            sock.close()
            raise
        services.start_background_work()
        remembering = asyncio.create_task(self._remember_first_runner(supervisor))
        recording = asyncio.create_task(self._complete_first_record(supervisor, pool))
        try:
            await self._serve(gateway.build_server(self.settings, services), sock, state, services)
        finally:
            remembering.cancel()
            if not recording.done():  # stopped within a second of the first model's start
                recording.cancel()
                await asyncio.to_thread(self._keep_whole_record, pool)
            await services.close()
            remove_state(self.paths.state_file)
            sock.close()
            log.info("Stopped.")

    async def _complete_first_record(self, supervisor: Supervisor, pool: ModelPool) -> None:
        """The first model's whole library record, made once that model is ready and has had
        a second for its first answer (or as the daemon stops, sooner), and kept for the next
        launch. A first launch loads the starter with a record made from its header alone
        (``Library.starter_record``): the rest reads its chat template with Jinja, 35 ms of
        CPU that would otherwise compete with the model's load."""
        with contextlib.suppress(LocalserveError):  # a failed load: kept as the daemon stops
            await supervisor.ready(self.settings.limits.runner_start_timeout)
        await asyncio.sleep(WHOLE_RECORD_DELAY_S)
        await asyncio.to_thread(self._keep_whole_record, pool)

    def _keep_whole_record(self, pool: ModelPool) -> None:
        try:
            pool.capabilities(self.model.model_id)
        except (LocalserveError, OSError, ValueError) as exc:
            log.debug("No library record of %s yet: %s", self.model.model_id, exc)

    async def _remember_first_runner(self, supervisor: Supervisor) -> None:
        """Once the first model is ready, keep its runner's handshake for the next launch with
        the same arguments (``head_start.FirstRunnerMemory``); forget it when that load
        failed or ``load_ahead`` is off. Only where the console script started this launch's
        first runner, with this process's arguments."""
        if self._first_runner is None:
            return
        memory = FirstRunnerMemory(self.paths.first_runner_file)
        if not self.settings.limits.load_ahead:
            await asyncio.to_thread(memory.forget)
            return
        try:
            await supervisor.ready(self.settings.limits.runner_start_timeout)
            handshake = supervisor.next_handshake()
        except LocalserveError:
            handshake = None
        if handshake is None:
            await asyncio.to_thread(memory.forget)
            return
        files = [handshake.model_path, *filter(None, [handshake.mmproj_path])]
        kept = handshake.model_dump(mode="json", exclude={"token"})
        try:
            await asyncio.to_thread(memory.remember, sys.argv[1:], kept, build_id(), files)
        except OSError as exc:  # only a head start for the next launch
            log.warning("Could not keep the first runner's handshake: %s", exc)

    def _refuse_a_second_daemon(self) -> None:
        running = read_state(self.paths.state_file)
        if running is not None:
            raise ConfigError(
                f"localserve is already running at {running.url} (pid {running.pid})."
            )
        stop_orphan_runners(self.paths.runner_pid_dir)  # no daemon runs: any runner is stray
        self.paths.runner_pid_dir.mkdir(mode=0o700, exist_ok=True)

    def _spare(self) -> SpareRunner:
        return SpareRunner(
            self.paths.log_dir / SPARE_LOG_NAME,
            self.paths.runner_pid_dir,
            after_unload=self.settings.limits.prestart_runner,
        )

    def _pool(self, telemetry: Telemetry, spare: SpareRunner) -> ModelPool:
        limits = self.settings.limits
        return ModelPool(
            Library(self.paths.models_dir, self.paths.starter_record_file),
            self.runner_spec,
            PoolLimits(
                max_loaded=limits.max_loaded_models,
                start_timeout=limits.runner_start_timeout,
                keep_alive=limits.keep_alive,
                max_queue=limits.max_queue,
                cpu_threads=self.engine.threads if limits.share_cpu_threads else 0,
            ),
            default=self.model,
            gpu_offload=gpu_offload_supported(),
            on_event=telemetry.on_runner_event,
            crash_policy=CrashPolicy(limits.crash_limit, limits.crash_window),
            spare=spare,
        )

    async def _serve(
        self, server: GatewayServer, sock: socket.socket, state: DaemonState, services: Services
    ) -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            resume_garbage_collection()  # paused for `serve`'s start-up (cli/__init__.py)
            write_state(self.paths.state_file, state)
            log.info("Gateway listening on %s", state.url)
            if self._on_listening:
                self._on_listening(state)
            if self.settings.remote.remote_enabled:
                try:
                    await services.remote.enable(None, None)
                except LocalserveError as exc:  # serving locally matters more
                    log.error("Remote access could not start: %s", exc)
        await serving


def configure_logging(settings: Settings, paths: AppPaths) -> None:
    logs.configure_logging(paths.daemon_log, settings.log_level, settings.log_format == "json")


def run_daemon(
    settings: Settings,
    paths: AppPaths,
    model: ResolvedModel,
    on_listening: Callable[[DaemonState], None] | None = None,
    first_runner: subprocess.Popen[bytes] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (uvicorn handles both), then stop the runner and clean up."""
    run_async(Daemon(settings, paths, model, on_listening, first_runner).run())
