"""The daemon: the gateway (uvicorn + create_app), the pool of model runners, and downloads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import signal
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import APIRouter

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
from localserve.server.response_store import ResponseStore
from localserve.server.routes.control import ForwardingPolicy, control_routes, model_status
from localserve.server.routes.ollama import ollama_routes
from localserve.server.routes.responses import responses_routes

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
        """Serve until SIGINT/SIGTERM, then stop the runners and remove the state file."""
        host = check_loopback_host(self.settings.host)
        self._refuse_a_second_daemon()
        sock = bind_socket(host, self.settings.port)
        state = new_state(host, sock.getsockname()[1], self.model.model_id, __version__)
        services = self._services(state)
        await services.pool.load(self.model.model_id)
        services.start_background_work()
        try:
            await self._serve(self._gateway(services), sock, state, services)
        finally:
            await services.close()
            remove_state(self.paths.state_file)
            sock.close()
            log.info("Stopped.")

    def _refuse_a_second_daemon(self) -> None:
        running = read_state(self.paths.state_file)
        if running is not None:
            raise ConfigError(
                f"localserve is already running at {running.url} (pid {running.pid})."
            )
        stop_orphan_runners(self.paths.runner_pid_dir)  # no daemon runs: any runner is stray
        self.paths.runner_pid_dir.mkdir(mode=0o700, exist_ok=True)

    def _services(self, state: DaemonState) -> Services:
        """The pool, pulls, telemetry, routing and remote access of one run."""
        settings, paths, limits = self.settings, self.paths, self.settings.limits
        library = Library(paths.models_dir)
        telemetry = Telemetry(lambda: pool.in_flight(), lambda: pool.runner_pids())
        pool = ModelPool(
            library,
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
        )
        pulls = PullManager(library, HubOptions(limits.hub_timeout, limits.pull_network_wait))
        runner_http = backend_client(httpx.Timeout(limits.request_timeout, connect=5.0))
        cloud_http = cloud_client(httpx.Timeout(limits.request_timeout, connect=10.0))
        cloud = CloudBackends(
            ProviderStore(paths),
            cloud_http,
            UsageLedger(paths.cloud_usage_file),
            own_port=state.port,
        )
        policy = ForwardingPolicy(local_only=settings.local_only)
        local = LocalBackend(pool, runner_http, ready_timeout=limits.runner_start_timeout)
        router = Router(local, cloud, lambda: policy.local_only)
        verifier = KeyVerifier(KeyStore(paths))
        # Served by the loopback gateway and the remote listener alike (one store of responses).
        extra = [
            responses_routes(router, ResponseStore()),
            ollama_routes(router, PoolCatalog(pool), ManagerPulls(pulls)),
        ]
        remote = RemoteAccess(settings, paths, router, verifier, extra=extra)
        return Services(
            pool, pulls, telemetry, cloud, policy, router, verifier, extra, remote, state,
            [runner_http, cloud_http],
        )  # fmt: skip

    async def _status(self, services: Services) -> DaemonStatus:
        return DaemonStatus(
            version=__version__,
            pid=services.state.pid,
            url=services.state.url,
            default_model=self.model.model_id,
            max_loaded_models=self.settings.limits.max_loaded_models,
            local_only=services.policy.local_only,
            providers=sorted(services.cloud.backends),
            remote=services.remote.status(),
            engine=EngineBuild.model_validate(
                {**build_summary(), "gpu_offload": gpu_offload_supported()}
            ),
            models=[model_status(model) for model in services.pool.status()],
        )

    def _gateway(self, services: Services) -> GatewayServer:
        """uvicorn serving the gateway app: the inference APIs and the control API."""
        control = control_routes(
            services.pool,
            services.pulls,
            services.telemetry,
            services.policy,
            functools.partial(self._status, services),
            services.remote,
        )
        app = create_app(
            self.settings, services.router, services.verifier, control, extra=services.routes
        )
        return GatewayServer(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=3,
                server_header=False,
                http=deadline_http_protocol(self.settings.limits.header_timeout),
            )
        )

    async def _serve(
        self, server: GatewayServer, sock: socket.socket, state: DaemonState, services: Services
    ) -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
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


@dataclass
class Services:
    """What one run of the daemon builds around its gateway, and how it is taken down."""

    pool: ModelPool
    pulls: PullManager
    telemetry: Telemetry
    cloud: CloudBackends
    policy: ForwardingPolicy
    router: Router
    verifier: KeyVerifier
    routes: list[APIRouter]  # the Responses and Ollama APIs
    remote: RemoteAccess
    state: DaemonState
    http_clients: list[httpx.AsyncClient]
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def start_background_work(self) -> None:
        """Memory samples, idle unloading, fresh cloud model lists: until ``close``."""
        self.background = [
            asyncio.create_task(self.telemetry.run_sampler()),
            asyncio.create_task(self.pool.run_idle_unloader()),
            asyncio.create_task(self.cloud.keep_model_lists_fresh()),
        ]

    async def close(self) -> None:
        await self.remote.disable()
        for task in self.background:
            task.cancel()
        self.pulls.cancel_all()
        await self.pool.stop_all()
        for client in self.http_clients:
            await client.aclose()


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
