"""The daemon: the gateway (uvicorn + create_app), the pool of model runners, and downloads."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator

import httpx
import uvicorn

from localserve import __version__, logs
from localserve.api.control import DaemonStatus, EngineBuild
from localserve.asgi.serving import bind_socket, deadline_http_protocol, run_async
from localserve.cloud.ledger import UsageLedger
from localserve.cloud.providers import ProviderStore
from localserve.config import Settings
from localserve.daemon.catalog import ManagerPulls, PoolCatalog
from localserve.daemon.orphans import stop_orphan_runners
from localserve.daemon.pool import ModelPool, PoolLimits
from localserve.daemon.pulls import PullManager
from localserve.daemon.remote import RemoteAccess
from localserve.daemon.state import DaemonState, new_state, read_state, remove_state, write_state
from localserve.daemon.supervisor import CrashPolicy, RunnerSpec
from localserve.daemon.telemetry import Telemetry
from localserve.errors import ConfigError, LocalserveError
from localserve.hardware.devices import resolve_engine
from localserve.hub.client import HubOptions
from localserve.hub.library import Library
from localserve.hub.resolve import ResolvedModel
from localserve.paths import AppPaths
from localserve.router.cloud import CloudBackends
from localserve.router.local import LocalBackend
from localserve.router.router import Router
from localserve.runner.llama_backends import build_summary, gpu_offload_supported
from localserve.security.keys import KeyStore
from localserve.server.app import create_app
from localserve.server.auth import KeyVerifier
from localserve.server.routes.control import ForwardingPolicy, control_routes, model_status
from localserve.server.routes.ollama import ollama_routes

log = logging.getLogger(__name__)

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


def backend_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The gateway's HTTP client for backends (runners and cloud providers).

    TCP_NODELAY matters: httpx writes a request's headers and body separately, and with Nagle's
    algorithm on, the body waits for the delayed ACK of the headers (about 40 ms on Linux).
    """
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_keepalive_connections=32),
    )
    return httpx.AsyncClient(timeout=timeout, transport=transport)


def cloud_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The gateway's HTTP client for cloud providers: ``backend_client``, unless the environment
    sets a proxy (HTTPS_PROXY, ALL_PROXY, NO_PROXY), which httpx applies only to a client that
    builds its own transport."""
    if any(urllib.request.getproxies().get(scheme) for scheme in ("http", "https", "all")):
        return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=32))
    return backend_client(timeout)


class GatewayServer(uvicorn.Server):
    """uvicorn, minus re-raising SIGINT/SIGTERM after shutdown.

    uvicorn re-raises the signal once it has stopped serving; for SIGTERM that kills the process
    before the daemon has stopped its runner and removed its state file. We stop in order instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        watched = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in watched}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        paths: AppPaths,
        model: ResolvedModel,
        on_listening: Callable[[DaemonState], None] | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.model = model
        # "auto" decided once, for every runner and for the CPU-thread split.
        self.engine = resolve_engine(settings.engine, gpu_offload_supported())
        self._on_listening = on_listening

    def runner_spec(self, model: ResolvedModel) -> RunnerSpec:
        return RunnerSpec(
            model_id=model.model_id,
            model_path=model.path,
            engine=self.engine,
            log_file=self.paths.runner_log(model.model_id),
            log_level=self.settings.log_level,
            pid_dir=self.paths.runner_pid_dir,
            engine_checks_file=self.paths.engine_checks_file,
        )

    async def run(self) -> None:
        settings, paths = self.settings, self.paths
        section = settings.limits
        host = check_loopback_host(settings.host)
        running = read_state(paths.state_file)
        if running is not None:
            raise ConfigError(
                f"localserve is already running at {running.url} (pid {running.pid})."
            )
        stop_orphan_runners(paths.runner_pid_dir)  # no daemon runs: any runner listed is stray
        paths.runner_pid_dir.mkdir(mode=0o700, exist_ok=True)
        sock = bind_socket(host, settings.port)
        port = sock.getsockname()[1]
        verifier = KeyVerifier(KeyStore(paths))
        library = Library(paths.models_dir)
        telemetry = Telemetry(lambda: pool.in_flight(), lambda: pool.runner_pids())
        limits = PoolLimits(
            max_loaded=section.max_loaded_models,
            start_timeout=section.runner_start_timeout,
            keep_alive=section.keep_alive,
            max_queue=section.max_queue,
            cpu_threads=self.engine.threads if section.share_cpu_threads else 0,
        )
        pool = ModelPool(
            library,
            self.runner_spec,
            limits,
            default=self.model,
            gpu_offload=gpu_offload_supported(),
            on_event=telemetry.on_runner_event,
            crash_policy=CrashPolicy(section.crash_limit, section.crash_window),
        )
        pulls = PullManager(library, HubOptions(section.hub_timeout, section.pull_network_wait))
        timeout = httpx.Timeout(section.request_timeout, connect=5.0)
        client = backend_client(timeout)
        backend = LocalBackend(pool, client, ready_timeout=section.runner_start_timeout)
        cloud_http = cloud_client(httpx.Timeout(section.request_timeout, connect=10.0))
        cloud = CloudBackends(
            ProviderStore(paths), cloud_http, UsageLedger(paths.cloud_usage_file), own_port=port
        )
        policy = ForwardingPolicy(local_only=settings.local_only)
        router = Router(backend, cloud, lambda: policy.local_only)
        ollama = ollama_routes(router, PoolCatalog(pool), ManagerPulls(pulls))
        remote = RemoteAccess(settings, paths, router, verifier, extra=[ollama])
        state = new_state(host, port, self.model.model_id, __version__)

        async def status() -> DaemonStatus:
            return DaemonStatus(
                version=__version__,
                pid=state.pid,
                url=state.url,
                default_model=self.model.model_id,
                max_loaded_models=section.max_loaded_models,
                local_only=policy.local_only,
                providers=sorted(cloud.backends),
                remote=remote.status(),
                engine=EngineBuild.model_validate(
                    {**build_summary(), "gpu_offload": gpu_offload_supported()}
                ),
                models=[model_status(model) for model in pool.status()],
            )

        control = control_routes(pool, pulls, telemetry, policy, status, remote)
        app = create_app(settings, router, verifier, control, extra=[ollama])
        server = GatewayServer(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=3,
                server_header=False,
                http=deadline_http_protocol(section.header_timeout),
            )
        )
        await pool.load(self.model.model_id)
        sampler = asyncio.create_task(telemetry.run_sampler())
        idle_unloader = asyncio.create_task(pool.run_idle_unloader())
        model_lists = asyncio.create_task(cloud.keep_model_lists_fresh())
        try:
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            if server.started:
                write_state(paths.state_file, state)
                log.info("Gateway listening on %s", state.url)
                if self._on_listening:
                    self._on_listening(state)
                if settings.remote.remote_enabled:
                    try:
                        await remote.enable(None, None)
                    except LocalserveError as exc:  # serving locally matters more
                        log.error("Remote access could not start: %s", exc)
            await serving
        finally:
            await remote.disable()
            sampler.cancel()
            idle_unloader.cancel()
            model_lists.cancel()
            pulls.cancel_all()
            await pool.stop_all()
            await client.aclose()
            await cloud_http.aclose()
            remove_state(paths.state_file)
            sock.close()
            log.info("Stopped.")


def configure_logging(settings: Settings, paths: AppPaths) -> None:
    logs.configure_logging(paths.daemon_log, settings.log_level, settings.log_format == "json")


def run_daemon(
    settings: Settings,
    paths: AppPaths,
    model: ResolvedModel,
    on_listening: Callable[[DaemonState], None] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (uvicorn handles both), then stop the runner and clean up."""
    run_async(Daemon(settings, paths, model, on_listening).run())
