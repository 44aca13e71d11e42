"""The backend for models served by local runner child processes (one per loaded model).

It needs little of the daemon's model pool, and says so in ``RunnerPool``: which models exist,
and a runner for one of them (loaded if need be) to hold while a request uses it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import httpx

from localserve.api.keep_alive import parse_keep_alive
from localserve.api.presets import ModelPreset, with_request_defaults
from localserve.api.runner import RunnerEndpoint
from localserve.errors import BackendTimeoutError, BackendUnavailableError
from localserve.media import ImagePolicy
from localserve.router.backend import ModelCard, Payload
from localserve.router.images import VISION, image_parts, refuse_blind_model, with_fetched_images

LOCAL_BACKEND = "local"


class Runner(Protocol):
    """One model's runner, as a request sees it (the daemon's ``Supervisor``)."""

    async def ready(self, timeout: float) -> RunnerEndpoint: ...

    def runner_lost(self, endpoint: RunnerEndpoint) -> None: ...


RunnerT = TypeVar("RunnerT", bound=Runner)


class RunnerPool(Protocol[RunnerT]):
    """The models a request may name, and their runners (the daemon's ``ModelPool``)."""

    def model_ids(self) -> list[str]: ...

    def capabilities(self, model_id: str) -> list[str]: ...

    def serves(self, model_id: str) -> bool: ...

    async def acquire(self, model_id: str, keep_alive: float | None = None) -> RunnerT: ...

    def release(self, runner: RunnerT) -> None: ...


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
    on_close: Callable[[], None] = field(default=lambda: None)

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return str(self.response.headers.get("content-type", "application/json"))

    @property
    def client_headers(self) -> dict[str, str]:
        return {}

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
        try:
            await self.response.aclose()
        finally:
            on_close, self.on_close = self.on_close, lambda: None
            on_close()


class LocalBackend(Generic[RunnerT]):
    name = LOCAL_BACKEND

    def __init__(
        self,
        pool: RunnerPool[RunnerT],
        client: httpx.AsyncClient,
        ready_timeout: float,
        image_policy: ImagePolicy | None = None,
        presets: Callable[[str], ModelPreset | None] | None = None,
    ) -> None:
        self._presets = presets or (lambda model: None)
        self._pool = pool
        self._client = client
        self._ready_timeout = ready_timeout
        self._image_policy = image_policy or ImagePolicy()
        self._created = int(time.time())

    def models(self) -> list[ModelCard]:
        return [
            ModelCard(
                id=model_id,
                owned_by="local",
                created=self._created,
                capabilities=tuple(self._pool.capabilities(model_id)),
            )
            for model_id in self._pool.model_ids()
        ]

    def serves(self, model: str) -> bool:
        return self._pool.serves(model)

    async def send(self, path: str, payload: Payload) -> HttpxUpstream:
        """Relay to the runner of ``payload["model"]``, loading that model first if needed.
        A ``keep_alive`` field is ours (how long the model stays loaded), not the runner's."""
        payload = dict(payload)
        keep_alive = parse_keep_alive(payload.pop("keep_alive", None))
        # The model's preset: defaults for what the request leaves out (temperature...).
        payload = with_request_defaults(payload, self._presets(str(payload["model"])))
        if any(True for _ in image_parts(payload)):
            payload = await self._images_for(str(payload["model"]), payload)
        supervisor = await self._pool.acquire(str(payload["model"]), keep_alive)
        try:
            endpoint = await supervisor.ready(self._ready_timeout)
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
                supervisor.runner_lost(endpoint)
                raise backend_error(exc, "answering") from exc
        except BaseException:
            self._pool.release(supervisor)
            raise
        return HttpxUpstream(response, on_close=lambda: self._pool.release(supervisor))

    async def _images_for(self, model: str, payload: Payload) -> Payload:
        """Refuse images for a model that does not see (naming those that do), else fetch
        them: before the model is loaded for a request it could not answer."""
        if VISION not in self._pool.capabilities(model):
            seeing = [m for m in self._pool.model_ids() if VISION in self._pool.capabilities(m)]
            raise refuse_blind_model(model, seeing)
        return await with_fetched_images(payload, self._image_policy)
