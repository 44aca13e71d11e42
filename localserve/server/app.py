"""``create_app``: the gateway as an ASGI app, built from explicit parts (no module globals)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def create_app(
    settings: Settings,
    router: Router,
    verifier: KeyVerifier,
    control: APIRouter,
    extra: Sequence[APIRouter] = (),
) -> Any:
    """The gateway ASGI app: the OpenAI and Anthropic APIs (and ``extra`` routes, such as
    Ollama's) for any key, ``control`` for the admin key."""
    app = FastAPI(title="localserve", version=__version__, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    limits = settings.limits
    app.state.body_timeout = limits.body_timeout
    require_key = key_dependency(verifier)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    def require_admin(principal: Principal = Depends(require_key)) -> Principal:  # noqa: B008
        if not principal.is_admin:
            raise APIError(403, "This endpoint needs the admin key.", code="admin_key_required")
        return principal

    app.include_router(control, dependencies=[Depends(require_admin)])
    include_inference_routes(app, router, require_key, extra)

    asgi: Any = with_cors(app, settings.cors_origins)
    asgi = BodySizeLimit(asgi, limits.max_body_bytes)
    asgi = PerKeyConcurrency(asgi, limits.max_concurrent_per_key)
    asgi = PerKeyRateLimit(asgi, limits.rate_limit_per_key)
    return LoopbackHostGuard(asgi)
