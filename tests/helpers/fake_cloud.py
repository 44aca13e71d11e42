"""A small OpenAI-compatible cloud on loopback, for forwarding tests.

Speaks ``GET /v1/models``, ``POST /v1/chat/completions`` and ``/v1/completions`` (plain and
SSE streaming, with ``stream_options.include_usage``), ``POST /v1/responses`` (OpenAI's Responses
API: the response object, or its events ending in ``response.completed``) and
``POST /v1/embeddings``. Streams send
``CHUNKS`` pieces ``chunk_delay`` seconds apart, so a relay that buffers shows up in timings.

Faults on demand: ``script`` is consumed one entry per POST: ``"429:<seconds>"`` (with
``Retry-After``), ``"500"``, ``"400"``, ``"hang"`` (sleeps ``hang_seconds``), ``"drop"`` (cuts a
stream after two chunks), ``"html"`` (a captive portal's 200 login page) or ``"302"`` (a redirect
to one); ``get_script`` does the same for ``GET /v1/models`` (``"503"``, ``"html"``...). Every
request is recorded (path, headers, JSON body) so tests can check what was sent, and the key it
demands is ``key``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.helpers.fake_http import JsonHandler, LoopbackServer

if TYPE_CHECKING:
    from tests.helpers.daemon_process import DaemonProcess

CHUNKS = ["Hello", " from", " the", " cloud", "."]
USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
RESPONSES_USAGE = {"input_tokens": 7, "output_tokens": 5, "total_tokens": 12}
MODELS = ["gpt-test", "gpt-big", "gpt-priced"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    at: float


@dataclass
class FakeCloud:
    key: str = "sk-fake-cloud-key"
    chunk_delay: float = 0.0
    hang_seconds: float = 30.0
    script: list[str] = field(default_factory=list)
    get_script: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    stream_times: list[float] = field(default_factory=list)  # when each chunk was sent

    def __post_init__(self) -> None:
        self._server = LoopbackServer(self._handler())

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def add_to(self, daemon: DaemonProcess, name: str = "fake", *options: str) -> None:
        """Register this fake as provider ``name`` of ``daemon`` (``cloud add``, key on stdin)."""
        added = daemon.cli(
            "cloud",
            "add",
            name,
            "--base-url",
            self.base_url,
            "--key-from-stdin",
            *options,
            input=self.key + "\n",
        )
        assert added.returncode == 0, added.stderr

    def __enter__(self) -> FakeCloud:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def _handler(self) -> type[JsonHandler]:
        cloud = self

        class Handler(JsonHandler):
            def error(self, status: int, message: str, code: str, **headers: str) -> None:
                body = {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": code,
                    }
                }
                self.send_json(status, body, headers)

            def record(self, body: dict[str, Any] | None) -> None:
                cloud.received.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )

            def authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {cloud.key}":
                    return True
                self.error(401, "Incorrect API key provided.", "invalid_api_key")
                return False

            def do_GET(self) -> None:
                self.record(None)
                if cloud.get_script and self.send_fault(
                    cloud.get_script.pop(0), cloud.hang_seconds
                ):
                    return
                if not self.authorized():
                    return
                if self.path == "/v1/models":
                    data = [
                        {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"}
                        for m in MODELS
                    ]
                    self.send_json(200, {"object": "list", "data": data})
                else:
                    self.error(404, "Not found", "not_found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                self.record(body)
                if not self.authorized():
                    return
                fault = cloud.script.pop(0) if cloud.script else ""
                if fault.startswith("429"):
                    wait = fault.partition(":")[2] or "1"
                    self.error(
                        429,
                        "Rate limit reached; slow down.",
                        "rate_limit_exceeded",
                        **{"Retry-After": wait},
                    )
                    return
                if fault in ("500", "400"):
                    status = int(fault)
                    self.error(status, f"Upstream says {status} on purpose.", f"fake_{status}")
                    return
                if fault == "hang":
                    time.sleep(cloud.hang_seconds)
                    return
                if fault in ("html", "302") and self.send_fault(fault):
                    return
                if body.get("model") not in MODELS:
                    self.error(
                        404, f"The model `{body.get('model')}` does not exist.", "model_not_found"
                    )
                    return
                if self.path == "/v1/embeddings":
                    data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]
                    self.send_json(
                        200,
                        {
                            "object": "list",
                            "data": data,
                            "model": body["model"],
                            "usage": {"prompt_tokens": 3, "total_tokens": 3},
                        },
                    )
                    return
                if self.path == "/v1/responses":
                    self.respond(body)
                    return
                chat = self.path == "/v1/chat/completions"
                if body.get("stream"):
                    self.stream(body, chat, drop=fault == "drop")
                    return
                choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
                if chat:
                    choice["message"] = {"role": "assistant", "content": "".join(CHUNKS)}
                else:
                    choice["text"] = "".join(CHUNKS)
                self.send_json(
                    200,
                    {
                        "id": "cmpl-fake",
                        "object": "chat.completion" if chat else "text_completion",
                        "created": 1700000000,
                        "model": body["model"],
                        "choices": [choice],
                        "usage": USAGE,
                    },
                )

            def respond(self, body: dict[str, Any]) -> None:
                """The Responses API: one message of ``CHUNKS``, whole or as its events."""
                text = "".join(CHUNKS)
                item = {
                    "type": "message",
                    "id": "msg_fake",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
                response = {
                    "id": "resp_fake",
                    "object": "response",
                    "created_at": 1700000000,
                    "status": "completed",
                    "model": body["model"],
                    "output": [item],
                    "usage": RESPONSES_USAGE,
                }
                if not body.get("stream"):
                    self.send_json(200, response)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                events: list[dict[str, Any]] = [
                    {"type": "response.created", "response": {**response, "output": []}},
                    *(
                        {"type": "response.output_text.delta", "item_id": "msg_fake", "delta": p}
                        for p in CHUNKS
                    ),
                    {"type": "response.completed", "response": response},
                ]
                for number, event in enumerate(events):
                    data = json.dumps({**event, "sequence_number": number})
                    self.write_chunk(f"event: {event['type']}\ndata: {data}\n\n".encode())
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def write_chunk(self, data: bytes) -> None:
                """One piece of a chunked body (as real providers stream)."""
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def stream(self, body: dict[str, Any], chat: bool, drop: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                kind = "chat.completion.chunk" if chat else "text_completion"
                for index, piece in enumerate(CHUNKS):
                    if drop and index == 2:  # cut without the chunked terminator
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    delta = {"delta": {"content": piece}} if chat else {"text": piece}
                    chunk = {
                        "id": "cmpl-fake",
                        "object": kind,
                        "created": 1700000000,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": None, **delta}],
                    }
                    self.write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    cloud.stream_times.append(time.monotonic())
                    time.sleep(cloud.chunk_delay)
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {
                        "id": "cmpl-fake",
                        "object": kind,
                        "created": 1700000000,
                        "model": body["model"],
                        "choices": [],
                        "usage": USAGE,
                    }
                    self.write_chunk(b"data: " + json.dumps(usage).encode() + b"\n\n")
                self.write_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler
