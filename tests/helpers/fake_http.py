"""What the fake servers (Hub, cloud provider) share: a quiet JSON request handler and a
threaded HTTP server on a free loopback port."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # As real API servers do: without it each small write (an SSE event) waits for the
        # client's delayed ACK of the previous one (Nagle), ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_fault(self, fault: str, hang_seconds: float = 30.0) -> bool:
        """Answer with a network fault, as a flaky network or a captive portal would; False
        when ``fault`` is none of these. ``"503"`` and other 5xx, ``"429:<seconds>"`` (with
        Retry-After), ``"html"`` (a 200 login page), ``"302"`` (a redirect to one), ``"hang"``
        (say nothing for ``hang_seconds``) and ``"drop"`` (close without answering)."""
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if fault == "hang":
            time.sleep(hang_seconds)
            self.close_connection = True
            return True
        if fault == "html" or fault == "302":
            page = b"<html><body><h1>Welcome to Hotel WiFi</h1>Please sign in.</body></html>"
            self.send_response(200 if fault == "html" else 302)
            if fault == "302":
                self.send_header("Location", "http://portal.example/login")
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return True
        status, _, wait = fault.partition(":")
        if status.isdigit() and (status == "429" or status.startswith("5")):
            headers = {"Retry-After": wait} if wait else {}
            self.send_json(int(status), {"error": f"Fault {status} on purpose."}, headers)
            return True
        return False

    def bearer(self) -> str | None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token if scheme.lower() == "bearer" else None


class LoopbackServer:
    """``handler`` served on 127.0.0.1 from a background thread, between start() and stop()."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
    ) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.scheme = "https" if tls else "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        # A client that hangs up mid-body is normal here, not worth a traceback.
        self._server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
