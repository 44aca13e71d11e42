"""The backend for a model served by a local runner child process."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from localserve.daemon.supervisor import RunnerEndpoint, Supervisor
from localserve.errors import BackendUnavailableError
from localserve.router.backend import ModelCard, Payload

LOCAL_BACKEND = "local"


@dataclass
class HttpxUpstream:
    response: httpx.Response

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return str(self.response.headers.get("content-type", "application/json"))

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                "The model's runner stopped in the middle of this response; it is restarting."
            ) from exc

    async def aread(self) -> bytes:
        try:
            return await self.response.aread()
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                "The model's runner stopped before answering; it is restarting. Try again."
            ) from exc

    async def aclose(self) -> None:
        await self.response.aclose()


class LocalBackend:
    name = LOCAL_BACKEND

    def __init__(self, supervisor: Supervisor, client: httpx.AsyncClient, ready_timeout: float):
        self._supervisor = supervisor
        self._client = client
        self._ready_timeout = ready_timeout
        self._created = int(time.time())

    @property
    def model_id(self) -> str:
        return self._supervisor.spec.model_id

    def models(self) -> list[ModelCard]:
        return [ModelCard(id=self.model_id, owned_by="local", created=self._created)]

    async def info(self) -> dict[str, object]:
        endpoint = await self._supervisor.ready(self._ready_timeout)
        return endpoint.info

    async def send(self, path: str, payload: Payload) -> HttpxUpstream:
        endpoint = await self._supervisor.ready(self._ready_timeout)
        request = self._client.build_request(
            "POST",
            endpoint.base_url + path,
            content=json.dumps(payload).encode("utf-8"),
            headers={
                "authorization": f"Bearer {endpoint.token}",
                "content-type": "application/json",
            },
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._lost(endpoint)
            raise BackendUnavailableError(
                f"The runner for '{self.model_id}' is not answering; it is being restarted."
            ) from exc
        return HttpxUpstream(response)

    def _lost(self, endpoint: RunnerEndpoint) -> None:
        self._supervisor.runner_lost(endpoint)
