"""``create_app``: the gateway as an ASGI app, built from explicit parts (no module globals)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request

from localserve import __version__
from localserve.api.errors import APIError
from localserve.config import Settings
from localserve.router.router import Router
from localserve.server.auth import KeyVerifier, Principal, presented_key
from localserve.server.errors import WWW_AUTHENTICATE, install_error_handlers
from localserve.server.limits import PerKeyConcurrency, PerKeyRateLimit
from localserve.server.routes.anthropic import anthropic_routes
from localserve.server.routes.openai import openai_routes
from localserve.server.security import BodySizeLimit, LoopbackHostGuard, with_cors


def key_dependency(verifier: KeyVerifier) -> Callable[[Request], Principal]:
    def require_key(request: Request) -> Principal:
        key = presented_key(request.headers)
        if key is None:
            raise APIError(
                401,
                "Missing API key. Send 'Authorization: Bearer <key>' or 'x-api-key: <key>'; "
                "`localserve key show` prints the admin key.",
                code="missing_api_key",
                headers=WWW_AUTHENTICATE,
            )
        principal = verifier.verify(key)
        if principal is None:
            raise APIError(
                401, "Invalid API key.", code="invalid_api_key", headers=WWW_AUTHENTICATE
            )
        request.state.principal = principal
        return principal

    return require_key


def include_inference_routes(
    app: FastAPI,
    router: Router,
    require_key: Callable[..., Any],
    extra: Sequence[APIRouter] = (),
) -> None:
    """The OpenAI and Anthropic APIs, and ``extra`` (the Responses and Ollama APIs, built once
    by the daemon), behind ``require_key``: the same on the loopback gateway and the remote
    listener."""
    for routes in (openai_routes(router), anthropic_routes(router), *extra):
        app.include_router(routes, dependencies=[Depends(require_key)])


@dataclass
class LaterRoutes:
    """The route groups a chat needs none of: the control API (with ``/metrics``) for the admin
    key, and ``extra`` routes for any key (the Responses and Ollama APIs)."""

    control: APIRouter
    extra: Sequence[APIRouter] = field(default_factory=list)


# The paths of the later routes: each group's own, so no path is served by both apps.
LATER_PREFIXES = ("/localserve/", "/metrics", "/api/", "/v1/responses")


class DeferredRoutes:
    """The main app, and the later routes in an app of their own, built (imports included) by
    ``build`` on a worker thread at the first request for one of ``LATER_PREFIXES``: about
    40 ms of a cold start that the first chat answer no longer waits for."""

    def __init__(self, main: FastAPI, build: Callable[[], FastAPI]) -> None:
        self.main = main
        self._build = build
        self._later: FastAPI | None = None
        self._lock = asyncio.Lock()

    async def later(self) -> FastAPI:
        async with self._lock:
            if self._later is None:
                self._later = await asyncio.to_thread(self._build)
        return self._later

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(LATER_PREFIXES):
            app = self._later or await self.later()
            await app(scope, receive, send)
            return
        await self.main(scope, receive, send)


def base_app(settings: Settings, openapi_url: str | None = "/openapi.json") -> FastAPI:
    """A FastAPI app as every gateway app starts: no docs pages, the protocols' error
    shapes, and the body timeout that request reading uses."""
    app = FastAPI(
        title="localserve",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=openapi_url,
    )
    install_error_handlers(app)
    app.state.body_timeout = settings.limits.body_timeout
    return app


def create_app(
    settings: Settings,
    router: Router,
    verifier: KeyVerifier,
    later: Callable[[], LaterRoutes],
) -> Any:
    """The gateway ASGI app: the OpenAI and Anthropic APIs for any key, and the routes that
    ``later`` builds (``DeferredRoutes``): the control API for the admin key, extra routes
    (such as Ollama's) for any key."""
    app = base_app(settings)
    limits = settings.limits
    require_key = key_dependency(verifier)

    @app.get("/health", include_in_schema=False, response_model=None)  # as in routes/openai.py
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    include_inference_routes(app, router, require_key)

    def build_later() -> FastAPI:
        routes = later()
        later_app = base_app(settings)

        def require_admin(principal: Principal = Depends(require_key)) -> Principal:  # noqa: B008
            if not principal.is_admin:
                raise APIError(403, "This endpoint needs the admin key.", code="admin_key_required")
            return principal

        later_app.include_router(routes.control, dependencies=[Depends(require_admin)])
        for extra in routes.extra:
            later_app.include_router(extra, dependencies=[Depends(require_key)])
        return later_app

    asgi: Any = with_cors(DeferredRoutes(app, build_later), settings.cors_origins)
    asgi = BodySizeLimit(asgi, limits.max_body_bytes)
    asgi = PerKeyConcurrency(asgi, limits.max_concurrent_per_key)
    asgi = PerKeyRateLimit(asgi, limits.rate_limit_per_key)
    return LoopbackHostGuard(asgi)
