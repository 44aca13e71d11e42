"""Request guards that run before any route: loopback Host names only, bounded bodies.

Both are plain ASGI middleware so they cost nothing per streamed chunk.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from localserve.api.errors import APIError, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOST_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(host_header: str) -> str:
    """``[::1]:8080`` -> ``::1``; ``LocalHost:80`` -> ``localhost``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_host(host_header: str) -> bool:
    name = host_name(host_header)
    if name in LOOPBACK_HOST_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a DNS name such as 127.0.0.1.evil.example can point anywhere
        return False


async def send_error(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(message, "invalid_request_error", code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LoopbackHostGuard:
    """Refuse requests whose Host is not a loopback name: the DNS-rebinding defence.

    A web page on evil.example that rebinds its name to 127.0.0.1 still sends ``Host:
    evil.example``; only clients that really addressed this machine send a loopback name.
    """

    def __init__(self, app: ASGIApp, extra_hosts: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.extra_hosts = extra_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not (is_loopback_host(host) or host_name(host) in self.extra_hosts):
                await send_error(send, 403, "Host not allowed.", "host_not_allowed")
                return
        await self.app(scope, receive, send)


class BodyTooLarge(APIError):
    """Raised from ``receive`` so that whoever is reading the body stops; answered as 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413,
            f"Request body too large: the limit is {max_bytes} bytes.",
            code="request_too_large",
        )


class BodySizeLimit:
    """Answer 413 to bodies over ``max_bytes``, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            too_large = BodyTooLarge(self.max_bytes)
            await send_error(send, 413, too_large.message, "request_too_large")
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return event

        async def tracking_send(event: Message) -> None:
            nonlocal response_started
            if event["type"] == "http.response.start":
                response_started = True
            await send(event)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if not response_started:
                await send_error(send, 413, exc.message, "request_too_large")


def with_cors(app: ASGIApp, origins: list[str]) -> ASGIApp:
    """CORS for exactly ``origins`` (never ``*``); no CORS headers at all when empty."""
    if not origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    cors: ASGIApp = CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["authorization", "content-type", "x-api-key"],
    )
    return cors
