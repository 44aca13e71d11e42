"""Every HTTP error leaves the gateway in the shape of the protocol it was asked in: OpenAI's
``{"error": {"message", "type", "param", "code"}}`` by default, Anthropic's and Ollama's on their
paths (each protocol module renders its own). Which status and code an exception becomes is
``api.errors``'s to say."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localserve.api.errors import CLIENT_CLOSED_REQUEST, APIError, api_error_from
from localserve.asgi.disconnect import ClientDisconnected
from localserve.errors import LocalserveError
from localserve.protocols import anthropic, ollama, openai

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="localserve"'}


# Which protocol a path belongs to. The limits and security checks answer before any route is
# chosen, so the path is what they know; each protocol shapes its own body.
ERROR_SHAPES: tuple[tuple[str, Callable[[APIError], dict[str, Any]]], ...] = (
    ("/v1/messages", anthropic.error_object),
    ("/api/", ollama.error_object),
)


def error_response(err: APIError, path: str = "") -> JSONResponse:
    """The error in the shape of the protocol ``path`` belongs to (OpenAI by default)."""
    shape = next((shape for prefix, shape in ERROR_SHAPES if path.startswith(prefix)), None)
    body = shape(err) if shape is not None else openai.error_object(err)
    return JSONResponse(body, status_code=err.status_code, headers=err.headers)


def install_error_handlers(app: Starlette) -> None:
    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return error_response(exc, request.url.path)

    async def on_core_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LocalserveError)
        return error_response(api_error_from(exc), request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = "not_found" if exc.status_code == 404 else None
        return error_response(
            APIError(exc.status_code, str(exc.detail), error_type, code=code), request.url.path
        )

    async def on_client_gone(request: Request, exc: Exception) -> Response:
        # Nobody will read this; 499 (nginx's "client closed request") keeps any log honest.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("Unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            APIError(500, "Internal server error.", "server_error"), request.url.path
        )

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(LocalserveError, on_core_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnected, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)


def install_validation_error_handler(app: FastAPI) -> None:
    """FastAPI's own check of typed parameters and bodies, answered as a 400 in the path's
    protocol shape."""
    from fastapi.exceptions import RequestValidationError

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first["loc"] if part != "body") or None
        return error_response(
            APIError(400, f"Invalid request: {param}: {first['msg']}", param=param),
            request.url.path,
        )

    app.add_exception_handler(RequestValidationError, on_validation_error)
