"""The backend for a model served by a local runner child process."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from localserve.daemon.supervisor import Supervisor
from localserve.errors import BackendTimeoutError, BackendUnavailableError
from localserve.router.backend import ModelCard, Payload

LOCAL_BACKEND = "local"


def backend_error(exc: httpx.HTTPError, what: str) -> BackendUnavailableError:
    """The error a client sees when talking to the runner failed (``what`` says when)."""
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeoutError(
            f"The model sent nothing for longer than the request timeout {what}. "
            "Raise request_timeout for very long prompts on slow hardware."
        )
    return BackendUnavailableError(f"The model's runner stopped {what}; it is restarting.")


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
            raise backend_error(exc, "in the middle of this response") from exc

    async def aread(self) -> bytes:
        try:
            return await self.response.aread()
        except httpx.HTTPError as exc:
            raise backend_error(exc, "before answering") from exc

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
        except httpx.TimeoutException as exc:
            raise backend_error(exc, "before answering") from exc
        except httpx.HTTPError as exc:
            self._supervisor.runner_lost(endpoint)
            raise backend_error(exc, "answering") from exc
        return HttpxUpstream(response)
