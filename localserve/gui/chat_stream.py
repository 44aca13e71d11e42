"""One streamed chat answer from the daemon's ``/v1/chat/completions``, read without blocking.

The request goes through Qt's asynchronous network stack on the GUI thread: each ``readyRead``
hands over the bytes that arrived, which are cut into server-sent events and OpenAI chunks here,
and re-emitted as ``thought``/``text`` signals. Nothing waits: the reply calls back when bytes
come, and a transfer timeout ends a reply that goes silent. Stop aborts the reply, which closes
the connection; the daemon takes a closed connection as the client leaving and cancels the
generation at every hop (docs/architecture.md, "A request's path").

Lifecycle: ``StreamState`` (idle → waiting → streaming → done | stopped | failed), and a
``StreamOutcome`` once it ends. Errors are sorted by HTTP status and OpenAI error code, never by
their message, into a ``ChatError`` that says what happened and what to do.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from PySide6.QtCore import QObject, QUrl, Signal
from PySide6.QtNetwork import (
    QNetworkAccessManager,
    QNetworkProxy,
    QNetworkReply,
    QNetworkRequest,
)

from localserve.api.sse import SSEDecoder, read_chunk
from localserve.daemon.state import read_state
from localserve.gui.chat_store import AnswerStats
from localserve.paths import AppPaths
from localserve.security.keys import KeyStore

STREAM_TIMEOUT_S = 300.0  # silence allowed before the first token (a model may be loading)
MODELS_TIMEOUT_S = 20.0  # /v1/models may ask cloud providers for their lists first
Network = QNetworkReply.NetworkError


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon answers (``http://127.0.0.1:PORT``) and the key the tray uses."""

    url: str
    key: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def locate_daemon(paths: AppPaths) -> Endpoint | None:
    """The running daemon's endpoint, None when it is not running. Blocks (files, keyring):
    call it on a worker thread."""
    state = read_state(paths.state_file)
    if state is None:
        return None
    return Endpoint(state.url, KeyStore(paths).admin_key())


# -- errors ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatError:
    """What went wrong (``title``, and the daemon's own words in ``detail``) and what to do."""

    title: str
    detail: str = ""
    advice: str = ""
    status: int | None = None
    code: str | None = None

    def text(self) -> str:
        return " ".join(part for part in (f"{self.title}.", self.detail, self.advice) if part)


NOT_RUNNING = ChatError(
    "localserve is not running",
    advice="Start serving from the tray menu (Start serving), then send again.",
)
LOAD_CODES = ("model_load_failed", "backend_unavailable")


def error_fields(body: bytes) -> tuple[str, str | None]:
    """The message and code of an OpenAI error body (``{"error": {"message", "code"}}``),
    or of the shapes other servers use (``{"error": "..."}``, ``{"detail": "..."}``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:300], None
    if isinstance(data, dict):
        error = data.get("error", data.get("detail"))
        if isinstance(error, dict):
            code = error.get("code")
            return str(error.get("message") or ""), str(code) if code else None
        if error is not None:
            return str(error), None
    return str(data)[:300], None


def http_error(status: int, body: bytes, retry_after: str | None = None) -> ChatError:
    """The error a refused request shows, with what to do about it."""
    message, code = error_fields(body)

    def error(title: str, advice: str = "") -> ChatError:
        return ChatError(title, message, advice, status, code)

    if status == 429:
        wait = retry_after.strip() if retry_after and retry_after.strip().isdigit() else "a few"
        return error("The model is busy", f"Try again in {wait} s.")
    if status == 403 and code == "forwarding_not_allowed":
        return error(
            "Local only: not sent to a cloud provider",
            "Turn off local-only in the Cloud window (or Settings), or pick a local model.",
        )
    if status == 401:
        return error("The key was refused", "The admin key may have changed; send again.")
    if status == 404 and code == "model_not_found":
        return error("No such model", "Pick one from the model list (Refresh updates it).")
    if status == 503 and code == "model_too_large":
        return error(
            "The model is too large for this machine",
            "Pick a smaller model or quant, or map it to a cloud provider.",
        )
    if status == 503 and (code in LOAD_CODES or code is None):
        return error(
            "The model could not be loaded",
            "See its log (Open logs in the tray menu), or pick another model.",
        )
    if status == 400 and code == "image_not_supported":
        return error(
            "This model does not see images",
            "Pick a model that does (one with a vision projector), then attach the images again.",
        )
    if status == 400 and code == "context_length_exceeded":
        return error("The conversation is too long for this model", "Start a new chat.")
    if status in (502, 504):
        return error("The backend did not answer", "Try again shortly, or pick another model.")
    return error(f"The request was refused (HTTP {status})")


def stream_error(error: Any) -> ChatError:
    """An error event inside a stream that had started (``data: {"error": {...}}``)."""
    body = json.dumps({"error": error}).encode()
    message, code = error_fields(body)
    if code in LOAD_CODES:
        advice = "The model stopped mid-answer; see its log (Open logs in the tray menu)."
    else:
        advice = "Send again to retry."
    return ChatError("The answer was cut short", message, advice, None, code)


def network_error(
    error: QNetworkReply.NetworkError, description: str, timeout_s: float = STREAM_TIMEOUT_S
) -> ChatError:
    if error in (Network.ConnectionRefusedError, Network.HostNotFoundError):
        return NOT_RUNNING
    if error in (Network.TimeoutError, Network.OperationCanceledError):
        return ChatError(
            f"No answer for {timeout_s:.0f} s",
            advice="The model may be stuck loading; see the logs (Open logs in the tray menu).",
        )
    if error == Network.RemoteHostClosedError:
        return ChatError(
            "The connection closed before the answer ended",
            description,
            "localserve may have stopped; check the tray, then send again.",
        )
    return ChatError("Cannot reach localserve", description, "Check the tray, then send again.")


# -- the stream ----------------------------------------------------------------------------------
class StreamState(str, Enum):
    IDLE = "idle"
    WAITING = "waiting"  # sent; nothing generated yet (the model may be loading)
    STREAMING = "streaming"
    DONE = "done"
    STOPPED = "stopped"  # Stop was pressed
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (StreamState.WAITING, StreamState.STREAMING)


@dataclass
class StreamOutcome:
    state: StreamState
    stats: AnswerStats
    finish_reason: str | None = None
    error: ChatError | None = None


@dataclass
class _Clock:
    """Client-side timing of one answer (monotonic seconds)."""

    sent: float = 0.0
    first: float | None = None
    last: float | None = None
    pieces: int = 0  # chunks that carried text or thought: one token each from llama.cpp
    usage: dict[str, Any] = field(default_factory=dict)

    def piece(self) -> None:
        now = time.monotonic()
        self.first = now if self.first is None else self.first
        self.last = now
        self.pieces += 1

    def stats(self) -> AnswerStats:
        completion = self.usage.get("completion_tokens")
        tokens = int(completion) if isinstance(completion, int) else self.pieces
        rate = None
        if self.first is not None and self.last is not None and self.last > self.first:
            rate = (tokens - 1) / (self.last - self.first) if tokens > 1 else None
        prompt = self.usage.get("prompt_tokens")
        return AnswerStats(
            ttft_s=None if self.first is None else self.first - self.sent,
            tokens_per_s=rate,
            prompt_tokens=int(prompt) if isinstance(prompt, int) else None,
            completion_tokens=tokens,
            estimated=not isinstance(completion, int),
        )


def network_manager(parent: QObject | None = None) -> QNetworkAccessManager:
    """Qt's network stack for the daemon on loopback: never through a proxy."""
    manager = QNetworkAccessManager(parent)
    manager.setProxy(QNetworkProxy(QNetworkProxy.ProxyType.NoProxy))
    return manager


def json_request(endpoint: Endpoint, path: str, timeout_s: float) -> QNetworkRequest:
    request = QNetworkRequest(QUrl(endpoint.url + path))
    request.setRawHeader(b"Authorization", f"Bearer {endpoint.key}".encode())
    request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
    request.setTransferTimeout(int(timeout_s * 1000))
    return request


def http_status(reply: QNetworkReply) -> int | None:
    status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute)
    return int(status) if status is not None else None


class ChatStream(QObject):
    """One answer, streamed. Emits ``thought`` and ``text`` pieces as they arrive, then
    ``finished`` once with the ``StreamOutcome``."""

    thought = Signal(str)
    text = Signal(str)
    finished = Signal(object)  # StreamOutcome

    def __init__(self, manager: QNetworkAccessManager, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._manager = manager
        self.state = StreamState.IDLE
        self.outcome: StreamOutcome | None = None
        self._reply: QNetworkReply | None = None
        self._decoder = SSEDecoder()
        self._clock = _Clock()
        self._status: int | None = None
        self._error_body = b""
        self._finish_reason: str | None = None
        self._stream_error: ChatError | None = None

    def start(self, endpoint: Endpoint, body: dict[str, Any]) -> None:
        assert self.state is StreamState.IDLE, "a ChatStream streams one answer"
        request = json_request(endpoint, "/v1/chat/completions", STREAM_TIMEOUT_S)
        request.setRawHeader(b"Accept", b"text/event-stream")
        self._clock.sent = time.monotonic()
        self.state = StreamState.WAITING
        reply = self._manager.post(request, json.dumps(body).encode())
        reply.readyRead.connect(self._read)
        reply.finished.connect(self._on_finished)
        self._reply = reply

    def stop(self) -> None:
        """End the answer now: the connection closes, and the daemon cancels the generation."""
        if not self.state.active or self._reply is None:
            return
        self._end(StreamState.STOPPED)
        self._reply.abort()  # its finished signal, if any, finds the stream ended already

    def _read(self) -> None:
        reply = self._reply
        if reply is None or not self.state.active:
            return
        if self._status is None:
            self._status = http_status(reply)
        data = bytes(reply.readAll().data())
        if self._status is not None and self._status >= 400:
            self._error_body += data  # an error's JSON body, read whole at the end
            return
        for event in self._decoder.feed(data):
            parts = read_chunk(event)
            if parts is None:
                continue
            if parts.error is not None:
                self._stream_error = stream_error(parts.error)
                continue
            if parts.usage:
                self._clock.usage = parts.usage
            self._finish_reason = parts.finish_reason or self._finish_reason
            if parts.thought or parts.text:
                self._clock.piece()
                self.state = StreamState.STREAMING
                if parts.thought:
                    self.thought.emit(parts.thought)
                if parts.text:
                    self.text.emit(parts.text)
            if not self.state.active:
                return  # a slot stopped the stream

    def _on_finished(self) -> None:
        reply = self._reply
        if reply is None or not self.state.active:
            return
        self._read()  # whatever is left
        if self._ended():
            return  # a slot stopped it
        status = http_status(reply) or self._status
        if status is not None and status >= 400:
            retry = bytes(reply.rawHeader("Retry-After").data()).decode() or None
            self._end(StreamState.FAILED, http_error(status, self._error_body, retry))
        elif self._stream_error is not None:
            self._end(StreamState.FAILED, self._stream_error)
        elif reply.error() != Network.NoError:
            self._end(StreamState.FAILED, network_error(reply.error(), reply.errorString()))
        else:
            self._end(StreamState.DONE)

    def _ended(self) -> bool:
        return not self.state.active

    def _end(self, state: StreamState, error: ChatError | None = None) -> None:
        self.state = state
        self.outcome = StreamOutcome(state, self._clock.stats(), self._finish_reason, error)
        reply = self._reply
        if reply is not None:
            reply.deleteLater()
        self.finished.emit(self.outcome)


# -- the model list ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelChoice:
    id: str
    cloud: bool  # served by a cloud provider (``provider/model``), not a local runner
    capabilities: tuple[str, ...] = ()  # a local model's, from /v1/models ("vision", "tools"...)

    @property
    def sees(self) -> bool:
        """Images may go with a question: a local model that lists "vision", or any cloud
        model (the provider decides)."""
        return self.cloud or "vision" in self.capabilities


def read_model_list(body: bytes) -> list[ModelChoice]:
    """``/v1/models``: local models first, then the providers' ``provider/model`` ids."""
    data = json.loads(body).get("data") or []
    choices = [
        ModelChoice(
            str(item["id"]),
            item.get("owned_by") != "local",
            tuple(str(name) for name in item.get("capabilities") or []),
        )
        for item in data
        if isinstance(item, dict) and item.get("id")
    ]
    return [c for c in choices if not c.cloud] + [c for c in choices if c.cloud]


class ModelListRequest(QObject):
    """``GET /v1/models`` without blocking; emits ``listed(list[ModelChoice])`` or
    ``failed(ChatError)``."""

    listed = Signal(object)
    failed = Signal(object)

    def __init__(self, manager: QNetworkAccessManager, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._manager = manager

    def start(self, endpoint: Endpoint) -> None:
        reply = self._manager.get(json_request(endpoint, "/v1/models", MODELS_TIMEOUT_S))
        reply.finished.connect(lambda: self._on_finished(reply))

    def _on_finished(self, reply: QNetworkReply) -> None:
        reply.deleteLater()
        body = bytes(reply.readAll().data())
        status = http_status(reply)
        if status is not None and status >= 400:
            self.failed.emit(http_error(status, body))
            return
        if reply.error() != Network.NoError:
            self.failed.emit(network_error(reply.error(), reply.errorString(), MODELS_TIMEOUT_S))
            return
        try:
            self.listed.emit(read_model_list(body))
        except (ValueError, AttributeError, TypeError):
            self.failed.emit(ChatError("The model list could not be read", body.decode()[:200]))
