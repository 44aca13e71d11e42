"""The gateway around the model pool: HTTP clients, cloud backends, routing, the inference,
Responses, Ollama and control routes, remote access, and the uvicorn server that serves them.

The daemon imports this module only once its first runner has been spawned: these imports
(FastAPI, uvicorn, the Hub client, the control API's models: about 0.25 s) then overlap the
runner's own start instead of delaying it (``Daemon.run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import uvicorn

from localserve import __version__
from localserve.api.control import DaemonStatus, EngineBuild
from localserve.asgi.serving import deadline_http_protocol
from localserve.cloud.ledger import UsageLedger
from localserve.cloud.providers import ProviderStore
from localserve.config import Settings
from localserve.config.preset_store import PresetStore
from localserve.daemon.pool import ModelPool
from localserve.daemon.pulls import PullManager
from localserve.daemon.remote import RemoteAccess
from localserve.daemon.state import DaemonState
from localserve.daemon.telemetry import Telemetry
from localserve.hub.client import HubOptions
from localserve.media import ImagePolicy
from localserve.paths import AppPaths
from localserve.router.cloud import CloudBackends
from localserve.router.local import LocalBackend
from localserve.router.router import Router
from localserve.router.runner_transport import RunnerTransport
from localserve.runner.llama_backends import build_summary, gpu_offload_supported
from localserve.security.keys import KeyStore
from localserve.server.app import LaterRoutes, create_app
from localserve.server.auth import KeyVerifier
from localserve.server.ports import ForwardingPolicy

if TYPE_CHECKING:
    from fastapi import APIRouter


def backend_client(timeout: httpx.Timeout, tls: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """The gateway's HTTP client for backends (runners and cloud providers); ``tls`` verifies
    servers (default: the system's and certifi's certificate authorities).

    TCP_NODELAY matters: httpx writes a request's headers and body separately, and with Nagle's
    algorithm on, the body waits for the delayed ACK of the headers (about 40 ms on Linux).
    """
    transport = httpx.AsyncHTTPTransport(
        verify=tls if tls is not None else True,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_keepalive_connections=32),
    )
    return httpx.AsyncClient(timeout=timeout, transport=transport)


def runner_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The client for runners, which speak plain HTTP on loopback (``RunnerTransport``: no
    certificate authorities to load, and a C parser for each streamed token)."""
    return httpx.AsyncClient(timeout=timeout, transport=RunnerTransport())


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
    routes: Callable[[], list[APIRouter]]  # the Responses and Ollama APIs, built at first use
    remote: RemoteAccess
    state: DaemonState
    http_clients: list[httpx.AsyncClient]
    presets: PresetStore
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
        await self.cloud.aclose()


def build_services(
    settings: Settings,
    paths: AppPaths,
    state: DaemonState,
    pool: ModelPool,
    telemetry: Telemetry,
    presets: PresetStore,
) -> Services:
    """Pulls, cloud backends, routing and remote access around ``pool``, for one run."""
    limits = settings.limits
    pulls = PullManager(pool.library, HubOptions(limits.hub_timeout, limits.pull_network_wait))
    runner_http = runner_client(httpx.Timeout(limits.request_timeout, connect=5.0))
    cloud = CloudBackends(
        ProviderStore(paths),
        lambda: cloud_client(httpx.Timeout(limits.request_timeout, connect=10.0)),
        UsageLedger(paths.cloud_usage_file),
        own_port=state.port,
    )
    policy = ForwardingPolicy(local_only=settings.local_only)
    images = ImagePolicy(
        max_bytes=limits.max_image_bytes,
        allow_private_addresses=limits.allow_private_image_urls,
    )
    local = LocalBackend(pool, runner_http, limits.runner_start_timeout, images, presets.get)
    router = Router(local, cloud, lambda: policy.local_only)
    verifier = KeyVerifier(KeyStore(paths))

    @functools.cache
    def extra() -> list[APIRouter]:
        """Served by the loopback gateway and the remote listener alike (one store of
        responses); imported and built at their first use, not on the way to a first answer."""
        from localserve.daemon.catalog import ManagerPulls, PoolCatalog
        from localserve.server.response_store import ResponseStore
        from localserve.server.routes.ollama import ollama_routes
        from localserve.server.routes.responses import responses_routes

        return [
            responses_routes(router, ResponseStore()),
            ollama_routes(router, PoolCatalog(pool, presets), ManagerPulls(pulls)),
        ]

    remote = RemoteAccess(settings, paths, router, verifier, extra=extra)
    return Services(
        pool, pulls, telemetry, cloud, policy, router, verifier, extra, remote, state,
        [runner_http], presets,
    )  # fmt: skip


async def daemon_status(settings: Settings, services: Services) -> DaemonStatus:
    from localserve.server.routes.control import model_status  # loaded: it asks for this

    return DaemonStatus(
        version=__version__,
        pid=services.state.pid,
        url=services.state.url,
        default_model=services.pool.default.model_id,
        max_loaded_models=settings.limits.max_loaded_models,
        local_only=services.policy.local_only,
        providers=sorted(services.cloud.backends),
        remote=services.remote.status(),
        engine=EngineBuild.model_validate(
            {**build_summary(), "gpu_offload": gpu_offload_supported()}
        ),
        models=[model_status(model) for model in services.pool.status()],
    )


def build_server(settings: Settings, services: Services) -> GatewayServer:
    """uvicorn serving the gateway app: the inference APIs and the control API."""

    async def status() -> DaemonStatus:
        return await daemon_status(settings, services)

    def later() -> LaterRoutes:
        """The control, Responses and Ollama APIs, at their first request (server/app.py)."""
        from localserve.server.routes.control import control_routes

        control = control_routes(
            services.pool,
            services.pulls,
            services.telemetry,
            services.policy,
            status,
            services.remote,
            services.presets,
        )
        return LaterRoutes(control, services.routes())

    app = create_app(settings, services.router, services.verifier, later)
    return GatewayServer(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
            server_header=False,
            http=deadline_http_protocol(settings.limits.header_timeout),
        )
    )
