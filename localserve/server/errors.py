"""Every HTTP error leaves the gateway in OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from localserve.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    ContextOverflowError,
    DiskSpaceError,
    DownloadError,
    ForwardingRefusedError,
    HubAccessError,
    HubError,
    HubUnreachableError,
    InvalidModelFileError,
    InvalidRequestError,
    LocalserveError,
    ModelInUseError,
    ModelLoadError,
    ModelNotFoundError,
    ModelTooLargeError,
    QueueFullError,
    RepoNotFoundError,
    UnsupportedFeatureError,
    UpstreamError,
)
from localserve.network import FaultKind
from localserve.server.disconnect import ClientDisconnected

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="localserve"'}


class APIError(Exception):
    """An error raised inside a route that should become an OpenAI error response as is."""

    def __init__(
        self,
        status_code: int,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.headers = headers


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


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


UPSTREAM_CODES = {
    FaultKind.SERVER: "upstream_error",
    FaultKind.WEB_PAGE: "upstream_bad_response",
    FaultKind.TLS: "upstream_tls_error",
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


def sse_error_event(err: APIError) -> bytes:
    """An error that happens after a stream has started can only travel inside the stream."""
    body = error_body(err.message, err.error_type, err.code, err.param)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def api_error_from(exc: LocalserveError) -> APIError:
    """Translate a core exception into the HTTP error a client should see."""
    if isinstance(exc, ModelNotFoundError):
        return APIError(404, str(exc), code="model_not_found", param="model")
    if isinstance(exc, ModelInUseError):
        return APIError(409, str(exc), code="model_in_use")
    if isinstance(exc, RepoNotFoundError):
        return APIError(404, str(exc), code="repo_not_found")
    if isinstance(exc, HubAccessError):
        return APIError(403, str(exc), "permission_error", code="hub_access_denied")
    if isinstance(exc, HubUnreachableError):
        return hub_unreachable_error(exc)
    if isinstance(exc, HubError):
        return APIError(502, str(exc), "server_error", code="hub_error")
    if isinstance(exc, DiskSpaceError):
        return APIError(507, str(exc), "server_error", code="insufficient_storage")
    if isinstance(exc, DownloadError):
        return APIError(502, str(exc), "server_error", code="download_failed")
    if isinstance(exc, InvalidModelFileError):
        return APIError(400, str(exc), code="invalid_model_file")
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc), code="context_length_exceeded", param=exc.param)
    if isinstance(exc, UnsupportedFeatureError):
        return APIError(400, str(exc), code=exc.code, param=exc.param)
    if isinstance(exc, InvalidRequestError):
        return APIError(400, str(exc), param=exc.param)
    if isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(exc.retry_after)}
        return APIError(429, str(exc), "rate_limit_error", code="queue_full", headers=headers)
    if isinstance(exc, ModelTooLargeError):
        return APIError(503, str(exc), "server_error", code="model_too_large")
    if isinstance(exc, ModelLoadError):
        return APIError(503, str(exc), "server_error", code="model_load_failed")
    if isinstance(exc, ForwardingRefusedError):
        return APIError(403, str(exc), code="forwarding_not_allowed")
    if isinstance(exc, UpstreamError):
        kind = exc.fault.kind if exc.fault is not None else None
        code = UPSTREAM_CODES.get(kind, "upstream_unreachable") if kind else "upstream_unreachable"
        return APIError(502, str(exc), "server_error", code=code)
    if isinstance(exc, BackendTimeoutError):
        return APIError(504, str(exc), "server_error", code="backend_timeout")
    if isinstance(exc, BackendUnavailableError):
        return APIError(503, str(exc), "server_error", code="backend_unavailable")
    return APIError(500, str(exc), "server_error")


def hub_unreachable_error(exc: HubUnreachableError) -> APIError:
    """A network fault on the way to the Hub: 504 for a timeout, 429 (passing Retry-After on)
    when the Hub limits us, 502 for the rest."""
    fault = exc.fault
    if fault is not None and fault.kind is FaultKind.TIMEOUT:
        return APIError(504, str(exc), "server_error", code="hub_timeout")
    if fault is not None and fault.kind is FaultKind.RATE_LIMITED:
        wait = fault.retry_after
        headers = {"Retry-After": f"{wait:.0f}"} if wait is not None else None
        return APIError(429, str(exc), "rate_limit_error", "hub_rate_limited", headers=headers)
    return APIError(502, str(exc), "server_error", code="hub_unreachable")


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
