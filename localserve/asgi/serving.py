"""How localserve's processes listen: loopback sockets and the event loop they run on."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from localserve.errors import ConfigError


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Name the protocol: asyncio only sets TCP_NODELAY on sockets whose proto is IPPROTO_TCP,
    # and without it every small response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if os.name == "posix":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. "
            "Is another server using that port? Pick another with --port."
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (faster streaming), asyncio's default elsewhere."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(main: Coroutine[Any, Any, None]) -> None:
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(main)
    else:  # pragma: no cover - 3.10 keeps the default loop
        asyncio.run(main)


def deadline_http_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a deadline for each request's headers.

    uvicorn waits forever for the first request on a new connection, and any byte (even one
    header line a minute) cancels its keep-alive timer, so slow or silent clients (slow-loris)
    could hold connections without limit. Here a connection must deliver a request's complete
    headers within ``seconds`` of opening, or of the previous response, or it is closed.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class DeadlineHTTPProtocol(base):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._deadline_passed)

        def _deadline_passed(self) -> None:
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

    return DeadlineHTTPProtocol
