"""Core exceptions as HTTP errors: the status, OpenAI error type and code a client sees, and
OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``. Pure data: the gateway
renders it in each protocol's shape (``server/errors.py``), the runner in OpenAI's."""

from __future__ import annotations

from typing import Any

from localserve.api.sse import sse_data
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
    ImageRejectedError,
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

CLIENT_CLOSED_REQUEST = 499  # nginx's "client closed request": nobody reads the answer


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


UPSTREAM_CODES = {
    FaultKind.SERVER: "upstream_error",
    FaultKind.WEB_PAGE: "upstream_bad_response",
    FaultKind.TLS: "upstream_tls_error",
}


def sse_error_event(err: APIError) -> bytes:
    """An error that happens after a stream has started can only travel inside the stream."""
    return sse_data(error_body(err.message, err.error_type, err.code, err.param))


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
    if isinstance(exc, (UnsupportedFeatureError, ImageRejectedError)):
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
