"""The gateway as remote devices see it: the OpenAI API only, client keys only, TLS only.

Layers, outermost first:

- ``AuditLog``: one JSON line per request (time, address, key name, method, path, status,
  tokens) to a rotating file;
- ``AllowedHostGuard``: the ``Host`` must be a name or address of the certificate (or a
  configured extra name), against DNS rebinding;
- ``PerKeyConcurrency``: at most N requests in flight per presented key (429 above);
- ``RequestTimeout``: a whole request, streaming included, is cut after a limit;
- ``BodySizeLimit``: a smaller body limit than on loopback;
- the app, whose key dependency refuses the admin key and throttles failures per address
  (``AuthThrottle``): each failure is answered a little later, and after N failures in a
  window the address is locked out for a while (429 with Retry-After).

No control API and no ``/metrics`` here: they are loopback-only and answer 404 remotely.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from localserve.api.errors import APIError
from localserve.config import Settings
from localserve.router.router import Router
from localserve.server.app import fastapi_app, include_later_routes, inference_routes
from localserve.server.auth import KeyVerifier, Principal, presented_key
from localserve.server.errors import WWW_AUTHENTICATE
from localserve.server.limits import PerKeyConcurrency, PerKeyRateLimit
from localserve.server.security import (
    ASGIApp,
    BodySizeLimit,
    Message,
    Receive,
    Scope,
    Send,
    host_name,
    send_error,
    with_cors,
)

if TYPE_CHECKING:
    from fastapi import APIRouter

audit_log = logging.getLogger("localserve.remote.audit")

MAX_TRACKED_ADDRESSES = 10_000
MAX_FAILURE_DELAY_S = 2.0
AUDIT_BODY_LIMIT = 256 * 1024


@dataclass
class _Failures:
    times: list[float]
    locked_until: float = 0.0


class AuthThrottle:
    """Failed authentications per client address: slowed, then locked out for a while.

    The table is bounded (least recently seen addresses are forgotten first), so a flood of
    addresses cannot grow memory without limit.
    """

    def __init__(
        self,
        failures: int,
        window_s: float,
        lockout_s: float,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._table: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it is not locked out."""
        entry = self._table.get(address)
        if entry is None:
            return None
        left = entry.locked_until - self._clock()
        return left if left > 0 else None

    def failure(self, address: str) -> float:
        """Count a failure; returns how long to wait before answering it."""
        now = self._clock()
        entry = self._table.pop(address, None) or _Failures([])
        entry.times = [t for t in entry.times if now - t < self.window_s] + [now]
        if len(entry.times) >= self.failures:
            entry.locked_until = now + self.lockout_s
            entry.times = []
        self._table[address] = entry
        while len(self._table) > self.max_addresses:
            self._table.popitem(last=False)
        return min(MAX_FAILURE_DELAY_S, 0.1 * len(entry.times))

    def success(self, address: str) -> None:
        self._table.pop(address, None)


def client_key_dependency(
    verifier: KeyVerifier, throttle: AuthThrottle
) -> Callable[[Request], Any]:
    async def require_client_key(request: Request) -> Principal:
        address = request.client.host if request.client else "?"
        wait = throttle.retry_after(address)
        if wait is not None:
            raise APIError(
                429,
                "Too many failed attempts from this address; try again later.",
                code="too_many_auth_failures",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        key = presented_key(request.headers)
        principal = verifier.verify(key) if key else None
        if principal is None or principal.is_admin:
            await asyncio.sleep(throttle.failure(address))
            message = (
                "The admin key is not accepted remotely. Create a key for this device with "
                "`localserve key add NAME`."
                if principal is not None
                else "Missing or invalid API key."
            )
            raise APIError(401, message, code="invalid_api_key", headers=WWW_AUTHENTICATE)
        throttle.success(address)
        request.state.principal = principal
        return principal

    return require_client_key


class AllowedHostGuard:
    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_name(host) not in self.names:
                await send_error(send, 403, "Host not allowed.", "host_not_allowed")
                return
        await self.app(scope, receive, send)


class RequestTimeout:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracking_send), self.seconds)
        except asyncio.TimeoutError:
            if not started:
                await send_error(
                    send, 504, f"The request took longer than {self.seconds:.0f} s.", "timeout"
                )
            # Once streaming, the connection just ends: the client sees a cut stream.


class AuditLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.time()
        status = 0
        body = bytearray()
        is_json = False

        async def watching_send(message: Message) -> None:
            nonlocal status, is_json
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = dict(message.get("headers") or [])
                is_json = headers.get(b"content-type", b"").startswith(b"application/json")
            elif (
                message["type"] == "http.response.body" and is_json and len(body) < AUDIT_BODY_LIMIT
            ):
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            principal = (scope.get("state") or {}).get("principal")
            client = scope.get("client") or ("?", 0)
            audit_log.info(
                json.dumps(
                    {
                        "time": round(started, 3),
                        "address": client[0],
                        "key": principal.name if principal is not None else None,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "tokens": usage_of(bytes(body)) if is_json else None,
                        "seconds": round(time.time() - started, 3),
                    }
                )
            )


def usage_of(body: bytes) -> dict[str, int] | None:
    try:
        usage = json.loads(body).get("usage")
    except (ValueError, AttributeError):
        return None
    if not isinstance(usage, dict):
        return None
    return {k: int(v) for k, v in usage.items() if k.endswith("_tokens") and isinstance(v, int)}


def create_remote_app(
    settings: Settings,
    router: Router,
    verifier: KeyVerifier,
    throttle: AuthThrottle,
    allowed_hosts: frozenset[str],
    extra: Sequence[APIRouter] = (),
) -> Any:
    """The remote listener's app: the same inference APIs as loopback (``extra``: Ollama's),
    for client keys only; no control API, no metrics."""
    limits, remote = settings.limits, settings.remote
    require_key = client_key_dependency(verifier, throttle)
    app = fastapi_app(settings)  # for the FastAPI routes of ``extra``
    app.router.routes.extend(inference_routes(router, require_key))
    include_later_routes(app, extra, require_key)
    asgi: Any = with_cors(app, settings.cors_origins)
    asgi = BodySizeLimit(asgi, remote.remote_max_body_bytes)
    asgi = RequestTimeout(asgi, remote.remote_request_timeout)
    asgi = PerKeyConcurrency(asgi, remote.remote_max_concurrent_per_key)
    asgi = PerKeyRateLimit(asgi, limits.rate_limit_per_key)
    asgi = AllowedHostGuard(asgi, allowed_hosts)
    return AuditLog(asgi)
