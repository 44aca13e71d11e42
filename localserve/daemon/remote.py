"""Remote access: a second, TLS-only listener on a network address, switched at run time.

The loopback gateway is untouched; the remote listener serves ``create_remote_app`` (the OpenAI,
Anthropic and Ollama APIs, client keys only). Turning it off stops the listener and closes its
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import logging.handlers
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import psutil
import uvicorn

from localserve.api.control import RemoteStatus
from localserve.asgi.serving import bind_socket, deadline_http_protocol
from localserve.config import Settings
from localserve.errors import ConfigError
from localserve.paths import AppPaths
from localserve.router.router import Router
from localserve.server.auth import KeyVerifier
from localserve.server.remote import AuthThrottle, audit_log, create_remote_app

if TYPE_CHECKING:  # cryptography (20 ms) is imported when remote access is turned on
    from fastapi import APIRouter

    from localserve.security.tls import Certificate

log = logging.getLogger(__name__)

AUDIT_MAX_BYTES = 5 * 2**20
AUDIT_BACKUPS = 5


def primary_address() -> str:
    """The address this machine uses to reach other networks (its LAN address, usually)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it only picks a route
        return str(probe.getsockname()[0])
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    raise ConfigError("No network address found; pass one with --interface ADDR.")


def resolve_address(interface: str | None) -> str:
    """An interface name (``eth0``), an address, or None for the primary LAN address."""
    if not interface:
        return primary_address()
    try:
        return str(ipaddress.ip_address(interface.strip("[]")))
    except ValueError:
        pass
    addresses = psutil.net_if_addrs().get(interface)
    if not addresses:
        known = ", ".join(sorted(psutil.net_if_addrs()))
        raise ConfigError(f"No network interface '{interface}'. Interfaces: {known}.")
    for family in (socket.AF_INET, socket.AF_INET6):
        for address in addresses:
            if address.family == family and not address.address.startswith("fe80"):
                return str(address.address).split("%")[0]
    raise ConfigError(f"The interface '{interface}' has no usable address.")


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class RemoteServer(uvicorn.Server):
    """The remote listener: signals belong to the main gateway, not to this server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RemoteAccess:
    def __init__(
        self,
        settings: Settings,
        paths: AppPaths,
        router: Router,
        verifier: KeyVerifier,
        extra: Callable[[], Sequence[APIRouter]] = tuple,
    ) -> None:
        self.settings = settings
        self.remote = settings.remote
        self.extra = extra  # built when remote access is first turned on
        self.paths = paths
        self.router = router
        self.verifier = verifier
        remote = self.remote
        self.throttle = AuthThrottle(
            remote.remote_auth_failures, remote.remote_auth_window, remote.remote_lockout
        )
        self._server: RemoteServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._status = RemoteStatus(enabled=False)
        self._lock = asyncio.Lock()
        self._configure_audit_log()

    def status(self) -> RemoteStatus:
        return self._status

    async def enable(self, interface: str | None, port: int | None) -> RemoteStatus:
        from localserve.security.tls import ensure_certificate

        async with self._lock:
            await self._stop_locked()
            address = resolve_address(interface or self.remote.remote_address)
            cert = await asyncio.to_thread(
                ensure_certificate,
                self.paths.config_dir,
                [address],
                self.remote.remote_cert_file,
                self.remote.remote_key_file,
            )
            sock = bind_socket(address, self.remote.remote_port if port is None else port)
            bound_port = int(sock.getsockname()[1])
            allowed = cert.names | {n.lower() for n in self.remote.remote_hosts} | {address}
            app = create_remote_app(
                self.settings,
                self.router,
                self.verifier,
                self.throttle,
                frozenset(allowed),
                self.extra(),
            )
            server = RemoteServer(
                uvicorn.Config(
                    app,
                    ssl_certfile=str(cert.cert_file),
                    ssl_keyfile=str(cert.key_file),
                    log_level="warning",
                    access_log=False,
                    server_header=False,
                    timeout_keep_alive=15,
                    timeout_graceful_shutdown=1,
                    limit_concurrency=128,
                    http=deadline_http_protocol(self.settings.limits.header_timeout),
                )
            )
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if not server.started:
                sock.close()
                await task  # raises what stopped it
                raise ConfigError("The remote listener did not start; see the daemon log.")
            self._server, self._task = server, task
            self._status = self._describe(address, bound_port, cert)
            log.info(
                "Remote access on at %s (TLS, fingerprint %s)", self._status.url, cert.fingerprint
            )
            return self._status

    async def disable(self) -> RemoteStatus:
        async with self._lock:
            await self._stop_locked()
            return self._status

    async def _stop_locked(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        self._status = RemoteStatus(enabled=False)
        if server is None or task is None:
            return
        server.should_exit = True
        server.force_exit = True  # do not wait for keep-alive and streaming connections
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        log.info("Remote access off")

    @staticmethod
    def _describe(address: str, port: int, cert: Certificate) -> RemoteStatus:
        return RemoteStatus(
            enabled=True,
            url=f"https://{url_host(address)}:{port}/v1",
            address=address,
            port=port,
            fingerprint=cert.fingerprint,
            self_signed=cert.self_signed,
            cert_file=str(cert.cert_file),
        )

    def _configure_audit_log(self) -> None:
        if audit_log.handlers:
            return
        self.paths.log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            self.paths.log_dir / "remote-audit.log",
            maxBytes=AUDIT_MAX_BYTES,
            backupCount=AUDIT_BACKUPS,
            encoding="utf-8",
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit_log.addHandler(handler)
        audit_log.setLevel(logging.INFO)
        audit_log.propagate = False  # remote requests go to their own file, not the daemon log
