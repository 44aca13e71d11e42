"""A small Hugging Face Hub on loopback, speaking the real protocol for the calls we make.

- ``GET /api/models?search=...&filter=gguf`` -> list of repos (id, downloads, likes, lastModified)
- ``GET /api/models/{repo}[/revision/{rev}]?blobs=true`` -> repo info with ``sha`` and
  ``siblings`` (rfilename, size, lfs.sha256)
- ``HEAD|GET /{repo}/resolve/{rev}/{file}`` -> the bytes, with ``Range``, ``ETag``,
  ``X-Repo-Commit``, ``Accept-Ranges``; 404 with ``X-Error-Code: RepoNotFound|EntryNotFound``.

- ``GET /api/whoami-v2`` -> the account of a valid ``Authorization: Bearer`` token, else 401.

Faults on demand: ``script`` is consumed one entry per request (any path), answering with a
network fault (``JsonHandler.send_fault``: 5xx, ``429:<s>``, ``html``, ``hang``, ``drop``);
``outage_until`` (a ``time.monotonic()`` value) cuts every connection until then, as a lost
network does; ``tls`` serves HTTPS with the given context (a self-signed certificate fails
verification); ``drop_after`` closes the connection mid-body (once per setting),
``corrupt`` flips a byte in what it sends (``corrupt_files``: only in those files),
``bytes_per_second`` slows file bodies down (to
overlap or cancel downloads), ``requests`` records every request path and Range. A repo added
with ``gated=True`` answers 401 with ``X-Error-Code: GatedRepo`` unless a token in ``tokens``
is sent. Point ``HF_ENDPOINT`` at ``hub.url``.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from tests.helpers.daemon_process import DaemonProcess
from tests.helpers.fake_http import JsonHandler, LoopbackServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    downloads: int = 1000
    likes: int = 10
    last_modified: str = "2026-10-01T12:00:00.000Z"
    extra_files: dict[str, bytes] = field(default_factory=dict)  # non-LFS (README.md...)
    gated: bool = False


class FakeHub:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.script: list[str] = []
        self.hang_seconds = 30.0
        self.outage_until = 0.0
        self.drop_after: int | None = None  # bytes of body, then the connection is cut
        self.corrupt = False
        self.corrupt_files: set[str] = set()  # file names (in their repo) sent corrupted
        self.bytes_per_second: int | None = None
        self.tokens: dict[str, str] = {}  # token -> account name
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        self._server = LoopbackServer(self._handler(), tls)

    @property
    def url(self) -> str:
        return self._server.url

    def daemon(self, home: Path) -> DaemonProcess:
        """A daemon (not started yet) whose downloads go to this fake Hub."""
        return DaemonProcess(home, env={"HF_ENDPOINT": self.url, "HF_HOME": str(home / "hf")})

    def add_repo(self, repo_id: str, files: dict[str, bytes], **kwargs: Any) -> None:
        self.repos[repo_id] = FakeRepo(files, **kwargs)

    def add_repo_from_paths(self, repo_id: str, paths: dict[str, Path]) -> None:
        self.add_repo(repo_id, {name: path.read_bytes() for name, path in paths.items()})

    def __enter__(self) -> FakeHub:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    # -- protocol ------------------------------------------------------------------------------
    def search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        search = (query.get("search") or [""])[0].lower()
        wanted_filter = query.get("filter") or []
        found = []
        for repo_id, repo in self.repos.items():
            if search and search not in repo_id.lower():
                continue
            if "gguf" in wanted_filter and not any(n.endswith(".gguf") for n in repo.files):
                continue
            found.append(
                {
                    "_id": repo_id,
                    "id": repo_id,
                    "downloads": repo.downloads,
                    "likes": repo.likes,
                    "lastModified": repo.last_modified,
                    "tags": ["gguf"],
                    "private": False,
                }
            )
        found.sort(key=lambda item: -int(item["downloads"]))
        limit = int((query.get("limit") or ["1000"])[0])
        return found[:limit]

    def info(self, repo_id: str) -> dict[str, Any]:
        repo = self.repos[repo_id]
        siblings: list[dict[str, Any]] = [
            {
                "rfilename": name,
                "size": len(data),
                "blobId": hashlib.sha1(data).hexdigest(),
                "lfs": {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                },
            }
            for name, data in repo.files.items()
        ]
        siblings += [
            {"rfilename": name, "size": len(data), "blobId": "0" * 40}
            for name, data in repo.extra_files.items()
        ]
        return {
            "_id": repo_id,
            "id": repo_id,
            "modelId": repo_id,
            "sha": COMMIT,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "lastModified": repo.last_modified,
            "private": False,
            "gated": False,
            "tags": ["gguf"],
            "siblings": siblings,
        }

    def _handler(self) -> type[JsonHandler]:
        hub = self

        class Handler(JsonHandler):
            def not_found(self, code: str) -> None:
                message = "Repository not found" if code == "RepoNotFound" else "Entry not found"
                self.send_json(404, {"error": message}, {"X-Error-Code": code})

            def do_GET(self) -> None:
                self.route(head=False)

            def do_HEAD(self) -> None:
                self.route(head=True)

            def route(self, head: bool) -> None:
                parsed = urlparse(self.path)
                path = unquote(parsed.path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                if time.monotonic() < hub.outage_until:
                    self.send_fault("drop")
                    return
                if hub.script and self.send_fault(hub.script.pop(0), hub.hang_seconds):
                    return
                if path == "/api/whoami-v2":
                    account = hub.tokens.get(self.bearer() or "")
                    if account is None:
                        invalid = "Invalid credentials in Authorization header"
                        self.send_json(401, {"error": invalid})
                    else:
                        self.send_json(200, {"type": "user", "name": account})
                    return
                repo_match = path.split("/api/models/")[-1].split("/revision/")[0]
                repo_match = repo_match.split("/resolve/")[0].lstrip("/")
                gated = hub.repos.get(repo_match)
                if gated is not None and gated.gated and self.bearer() not in hub.tokens:
                    message = f"Access to model {repo_match} is restricted."
                    self.send_json(401, {"error": message}, {"X-Error-Code": "GatedRepo"})
                    return
                if path == "/api/models":
                    self.send_json(200, hub.search(parse_qs(parsed.query)))
                    return
                if path.startswith("/api/models/"):
                    repo_id = path[len("/api/models/") :].split("/revision/")[0]
                    if repo_id not in hub.repos:
                        self.not_found("RepoNotFound")
                        return
                    self.send_json(200, hub.info(repo_id))
                    return
                if "/resolve/" in path:
                    repo_id, rest = path.lstrip("/").split("/resolve/", 1)
                    name = rest.split("/", 1)[1] if "/" in rest else ""
                    repo = hub.repos.get(repo_id)
                    if repo is None:
                        self.not_found("RepoNotFound")
                    elif name not in repo.files:
                        self.not_found("EntryNotFound")
                    else:
                        self.send_file(repo.files[name], head, name)
                    return
                self.send_json(404, {"error": "Not found"})

            def send_file(self, data: bytes, head: bool, name: str = "") -> None:
                start, end = 0, len(data) - 1
                status = 200
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes="):
                    first, _, last = wanted[6:].partition("-")
                    start = int(first)
                    end = int(last) if last else len(data) - 1
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start : end + 1]
                self.send_response(status)
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                self.send_header("ETag", etag)
                self.send_header("X-Linked-Etag", etag)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if head:
                    return
                if (hub.corrupt or name in hub.corrupt_files) and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                if hub.drop_after is not None and len(body) > hub.drop_after:
                    cut, hub.drop_after = hub.drop_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if hub.bytes_per_second:
                    step = max(1, hub.bytes_per_second // 20)
                    for offset in range(0, len(body), step):
                        if time.monotonic() < hub.outage_until:  # the network went away
                            self.send_fault("drop")
                            return
                        self.wfile.write(body[offset : offset + step])
                        time.sleep(0.05)
                    return
                self.wfile.write(body)

        return Handler
