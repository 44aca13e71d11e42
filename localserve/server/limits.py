"""Per-key limits on inference requests: how many may be in flight, and how many a minute.

Keys are told apart by a hash of the credential presented, so these tables never hold a key.
They run before authentication (so an over-eager client is turned away cheaply); a wrong key
gets a bucket of its own and then its 401. The control API, metrics and health are exempt:
the tray's own polling must never be throttled.
"""

from __future__ import annotations

import hashlib
import math
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from localserve.api.errors import APIError
from localserve.server.auth import presented_key
from localserve.server.errors import error_response

EXEMPT_PREFIXES = ("/localserve/", "/metrics", "/health")
MAX_TRACKED_KEYS = 4096  # beyond this, full (idle) buckets are forgotten


async def refuse(
    scope: Scope, receive: Receive, send: Send, message: str, code: str, wait: int
) -> None:
    """A 429 with Retry-After, in the error shape of the protocol the path belongs to."""
    error = APIError(429, message, "rate_limit_error", code, headers={"retry-after": str(wait)})
    await error_response(error, scope["path"])(scope, receive, send)


def credential_slot(scope: Scope) -> str | None:
    """A hash of the key an inference request presents; None for exempt paths."""
    if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
        return None
    key = presented_key(Headers(scope=scope)) or ""
    return hashlib.sha256(key.encode()).hexdigest()


class PerKeyConcurrency:
    """At most ``limit`` requests in flight per key; 429 beyond (0 = no limit)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._in_flight: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slot = credential_slot(scope) if self.limit else None
        if slot is None:
            await self.app(scope, receive, send)
            return
        if self._in_flight.get(slot, 0) >= self.limit:
            await refuse(
                scope,
                receive,
                send,
                f"This key already has {self.limit} requests in flight; wait for one to finish.",
                "too_many_concurrent_requests",
                wait=1,
            )
            return
        self._in_flight[slot] = self._in_flight.get(slot, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight[slot] -= 1
                if not self._in_flight[slot]:
                    del self._in_flight[slot]

        async def releasing_send(message: Message) -> None:
            # Free the slot before the last byte goes out: a client that sends its next request
            # as soon as it has this answer must find the slot free, not race the cleanup.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                release()
            await send(message)

        try:
            await self.app(scope, receive, releasing_send)
        finally:
            release()


class PerKeyRateLimit:
    """A token bucket per key: ``per_minute`` requests a minute, bursts of as many; 429 with
    ``Retry-After`` beyond (0 = no limit)."""

    def __init__(self, app: ASGIApp, per_minute: int) -> None:
        self.app = app
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # slot -> (tokens, updated at)

    def _take(self, slot: str) -> float:
        """0 when a request may go now, else the seconds until one may."""
        now = time.monotonic()
        tokens, updated = self._buckets.get(slot, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.refill_per_s)
        if tokens >= 1.0:
            self._buckets[slot] = (tokens - 1.0, now)
            self._forget_idle(now)
            return 0.0
        self._buckets[slot] = (tokens, now)
        return (1.0 - tokens) / self.refill_per_s

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) <= MAX_TRACKED_KEYS:
            return
        full_after = self.capacity / self.refill_per_s
        self._buckets = {
            slot: (tokens, updated)
            for slot, (tokens, updated) in self._buckets.items()
            if now - updated < full_after
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slot = credential_slot(scope) if self.capacity else None
        wait = self._take(slot) if slot is not None else 0.0
        if not wait:
            await self.app(scope, receive, send)
            return
        await refuse(
            scope,
            receive,
            send,
            f"This key is limited to {self.capacity:.0f} requests a minute; "
            f"try again in {math.ceil(wait)} s.",
            "rate_limit_exceeded",
            wait=math.ceil(wait),
        )
