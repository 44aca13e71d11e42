"""``create_app``: the gateway as an ASGI app, built from explicit parts (no module globals).

The routes a chat needs (``/health``, the OpenAI and Anthropic APIs) are Starlette's own, in a
Starlette app: importing FastAPI costs 0.28 s of CPU, a quarter of the daemon's start on a
2-core machine, all of it before the first answer. The later routes (the control API, the
Ollama and Responses APIs), which take typed parameters and bodies, are FastAPI's, in an app
built at their first request (``DeferredRoutes``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from localserve import __version__
from localserve.api.errors import APIError
from localserve.config import Settings
from localserve.router.router import Router
from localserve.server.auth import KeyVerifier, Principal, presented_key
from localserve.server.errors import (
    WWW_AUTHENTICATE,
    install_error_handlers,
    install_validation_error_handler,
)
from localserve.server.limits import PerKeyConcurrency, PerKeyRateLimit
from localserve.server.routes.anthropic import anthropic_routes
from localserve.server.routes.openai import openai_routes
from localserve.server.security import BodySizeLimit, LoopbackHostGuard, with_cors

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

KeyCheck = Callable[[Request], "Principal | Awaitable[Principal]"]
AppT = TypeVar("AppT", bound=Starlette)


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


def guarded(routes: Sequence[Route], require_key: KeyCheck) -> list[BaseRoute]:
    """``routes`` with ``require_key`` run before each endpoint, as FastAPI runs a route
    dependency: a refused key raises before the request is read."""

    def guard(endpoint: Callable[[Request], Awaitable[Response]]) -> Any:
        async def checked(request: Request) -> Response:
            verdict = require_key(request)
            if inspect.isawaitable(verdict):
                await verdict
            return await endpoint(request)

        return checked

    return [Route(r.path, guard(r.endpoint), methods=r.methods, name=r.name) for r in routes]


def inference_routes(router: Router, require_key: KeyCheck) -> list[BaseRoute]:
    """``/health``, and the OpenAI and Anthropic APIs behind ``require_key``: the same on the
    loopback gateway and the remote listener."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [*openai_routes(router), *anthropic_routes(router)]
    return [Route("/health", health, methods=["GET"]), *guarded(routes, require_key)]


def include_later_routes(
    app: FastAPI, routes: Sequence[APIRouter], require: Callable[..., Any]
) -> None:
    """FastAPI ``routes`` behind the key check ``require``, as a route dependency."""
    from fastapi import Depends

    for group in routes:
        app.include_router(group, dependencies=[Depends(require)])


@dataclass
class LaterRoutes:
    """The route groups a chat needs none of: the control API (with ``/metrics``) for the admin
    key, and ``extra`` routes for any key (the Responses and Ollama APIs)."""

    control: APIRouter
    extra: Sequence[APIRouter] = field(default_factory=list)  # FastAPI's


# The paths of the later routes: each group's own, so no path is served by both apps.
LATER_PREFIXES = ("/localserve/", "/metrics", "/api/", "/v1/responses")


class DeferredRoutes:
    """The main app, and the later routes in an app of their own, built (imports included) by
    ``build`` on a worker thread at the first request for one of ``LATER_PREFIXES``: about
    40 ms of a cold start that the first chat answer no longer waits for."""

    def __init__(self, main: Starlette, build: Callable[[], FastAPI]) -> None:
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


def main_app(settings: Settings, routes: Sequence[BaseRoute]) -> Starlette:
    """The app of ``routes``, as every gateway app starts: the protocols' error shapes, and
    the body timeout that request reading uses."""
    return _as_gateway_app(Starlette(routes=list(routes)), settings)


def fastapi_app(settings: Settings) -> FastAPI:
    """A FastAPI app as ``main_app`` starts, with FastAPI's validation errors in the protocols'
    shapes too, and no docs pages or OpenAPI schema (the main app has none either)."""
    from fastapi import FastAPI

    app = FastAPI(
        title="localserve",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_validation_error_handler(app)
    return _as_gateway_app(app, settings)


def _as_gateway_app(app: AppT, settings: Settings) -> AppT:
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
    require_key = key_dependency(verifier)
    app = main_app(settings, inference_routes(router, require_key))
    limits = settings.limits

    def build_later() -> FastAPI:
        routes = later()
        later_app = fastapi_app(settings)

        def require_admin(request: Request) -> Principal:
            principal = require_key(request)
            if not principal.is_admin:
                raise APIError(403, "This endpoint needs the admin key.", code="admin_key_required")
            return principal

        include_later_routes(later_app, [routes.control], require_admin)
        include_later_routes(later_app, routes.extra, require_key)
        return later_app

    asgi: Any = with_cors(DeferredRoutes(app, build_later), settings.cors_origins)
    asgi = BodySizeLimit(asgi, limits.max_body_bytes)
    asgi = PerKeyConcurrency(asgi, limits.max_concurrent_per_key)
    asgi = PerKeyRateLimit(asgi, limits.rate_limit_per_key)
    return LoopbackHostGuard(asgi)
