"""Every HTTP error leaves the gateway in the shape of the protocol it was asked in: OpenAI's
``{"error": {"message", "type", "param", "code"}}`` by default, Anthropic's and Ollama's on their
paths. Which status and code an exception becomes is ``api.errors``'s to say."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from localserve.api.errors import CLIENT_CLOSED_REQUEST, APIError, api_error_from, error_body
from localserve.asgi.disconnect import ClientDisconnected
from localserve.errors import LocalserveError

log = logging.getLogger(__name__)

WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="localserve"'}


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_response(err: APIError, path: str = "") -> JSONResponse:
    """The error in the shape of the protocol ``path`` belongs to (OpenAI by default)."""
    if path.startswith("/v1/messages"):
        kind = ANTHROPIC_ERROR_TYPES.get(err.status_code, "api_error")
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": err.message}}
    elif path.startswith("/api/"):
        body = {"error": err.message}  # Ollama's shape
    else:
        body = error_body(err.message, err.error_type, err.code, err.param)
    return JSONResponse(body, status_code=err.status_code, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return error_response(exc, request.url.path)

    async def on_core_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LocalserveError)
        return error_response(api_error_from(exc), request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first["loc"] if part != "body") or None
        return error_response(
            APIError(400, f"Invalid request: {param}: {first['msg']}", param=param),
            request.url.path,
        )

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
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnected, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)
