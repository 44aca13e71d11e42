"""The whole gateway in-process: ``create_app`` with a fake backend (``fake_backend.py``), real
keys in a temp home, driven through ``httpx.ASGITransport``. No sockets, no model: a request
takes milliseconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
from fastapi import APIRouter

from localserve.config.settings import load_settings
from localserve.paths import app_paths
from localserve.router.router import Router
from localserve.security.keys import KeyStore
from localserve.server.app import LaterRoutes, create_app
from localserve.server.auth import KeyVerifier
from localserve.server.response_store import ResponseStore
from localserve.server.routes.ollama import ollama_routes
from localserve.server.routes.responses import responses_routes
from tests.helpers.fake_backend import FakeBackend, FakeCatalog, FakePulls

REQUEST_TIMEOUT_S = 10.0  # an answer slower than this is a hang
T = TypeVar("T")


@dataclass
class Gateway:
    app: Any
    backend: FakeBackend
    catalog: FakeCatalog
    admin_key: str
    client_key: str
    later_builds: list[int]  # one entry each time the later routes were built

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.client_key}"}

    def transport(self, http: ModuleType = httpx) -> Any:
        """The app, in-process, as a transport of ``http`` (httpx, or httpx2 for the SDKs built
        on it): what an official SDK's HTTP client is given (``http_client=`` a client with
        this transport, Ollama's ``transport=``)."""
        return http.ASGITransport(app=self.app, client=("127.0.0.1", 50000))

    def run(self, use: Callable[[], Awaitable[T]]) -> T:
        """``use`` (an SDK's calls over ``transport()``) run to its end; TimeoutError on a
        hang."""

        async def run() -> T:
            return await asyncio.wait_for(use(), REQUEST_TIMEOUT_S)

        return asyncio.run(run())

    async def send(
        self,
        method: str,
        path: str,
        *,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request, its answer read in full (streams too); TimeoutError on a hang."""
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            request = client.build_request(method, path, content=content, headers=headers)
            response = await asyncio.wait_for(client.send(request), REQUEST_TIMEOUT_S)
            await response.aread()
            return response

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> httpx.Response:
        """``body`` as JSON (or raw ``content``) with the client key unless ``headers`` say
        otherwise (``{}``: no key at all)."""
        raw = content if content is not None else json.dumps(body).encode()
        sent = {"content-type": "application/json", **(self.auth() if headers is None else headers)}
        return asyncio.run(self.send(method, path, content=raw, headers=sent))


def build_gateway(home: Path, backend: FakeBackend | None = None) -> Gateway:
    """A gateway over ``backend`` (a default ``FakeBackend``) with the OpenAI, Anthropic and
    Ollama APIs, an admin key and a client key, its files under ``home``."""
    paths = app_paths({"LOCALSERVE_HOME": str(home)}).ensure()
    settings = load_settings(paths.config_file)
    keys = KeyStore(paths)
    admin_key = keys.admin_key()
    client_key = keys.add_client_key("tests")
    backend = backend or FakeBackend()
    router = Router(backend)
    catalog = FakeCatalog()
    ollama = ollama_routes(router, catalog, FakePulls())
    responses = responses_routes(router, ResponseStore())
    builds: list[int] = []

    def later() -> LaterRoutes:
        builds.append(1)
        return LaterRoutes(APIRouter(), [responses, ollama])

    app = create_app(settings, router, KeyVerifier(keys), later)
    return Gateway(app, backend, catalog, admin_key, client_key, builds)


def sse_events(body: bytes) -> Iterator[tuple[str | None, Any]]:
    """(event name, data) for each server-sent event; data is JSON, or the text ``[DONE]``."""
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                text = line[len("data: ") :]
                data = text if text == "[DONE]" else json.loads(text)
        yield name, data


def ndjson_lines(body: bytes) -> list[Any]:
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]
