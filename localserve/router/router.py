"""Which backend serves a request, decided per request from the model name.

1. ``provider/model`` names a cloud provider's model: that provider.
2. An installed local model: its runner. If it cannot load because it is too large (or fails
   to load and its provider allows fallback), a cloud model mapped to it takes the request.
3. A name mapped to a cloud model but not installed (a Hub model too big to download): the
   mapped model.

With ``local_only`` on, any route to a cloud provider is refused with a 403 that says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from localserve.errors import (
    ForwardingRefusedError,
    ModelLoadError,
    ModelNotFoundError,
    ModelTooLargeError,
)
from localserve.router.backend import Backend, ModelCard, Payload
from localserve.router.cloud import CloudBackend, CloudBackends


@dataclass(frozen=True)
class Route:
    backend: Backend
    model: str  # the model name the backend is sent

    def payload(self, payload: Payload) -> Payload:
        return payload if payload.get("model") == self.model else {**payload, "model": self.model}


class Router:
    def __init__(
        self,
        local: Backend,
        cloud: CloudBackends | None = None,
        local_only: Callable[[], bool] = lambda: False,
    ) -> None:
        self._local = local
        self._cloud = cloud
        self._local_only = local_only

    def _backends(self) -> list[Backend]:
        cloud = list(self._cloud.backends.values()) if self._cloud else []
        return [self._local, *cloud]

    async def list_cloud_models_soon(self) -> None:
        """Before a model listing: the providers' lists, fetched the first time (see
        ``CloudBackends.list_models_soon``)."""
        if self._cloud is not None:
            await self._cloud.list_models_soon()

    def models(self) -> list[ModelCard]:
        return [card for backend in self._backends() for card in backend.models()]

    def card(self, model: str) -> ModelCard:
        wanted = model.strip()
        for card in self.models():
            if card.id in (wanted, wanted.lower()):
                return card
        raise ModelNotFoundError(model, [card.id for card in self.models()])

    def route(self, model: str) -> Route:
        if self._cloud is not None:
            self._cloud.reload()
            provider, _, rest = model.partition("/")
            if rest and provider in self._cloud.backends:
                return self._cloud_route(model, f"the request names {model}")
        if self._local.serves(model):
            return Route(self._local, model)
        mapped = self.mapping(model)
        if mapped is not None:
            return self._cloud_route(mapped, f"{model} is mapped to {mapped}")
        raise ModelNotFoundError(model, [card.id for card in self.models()])

    def speaks_responses(self, model: str) -> bool:
        """Whether ``model`` goes to a cloud provider that takes OpenAI's Responses API as it
        is; every other backend gets Responses requests as chat completions."""
        backend = self.route(model).backend
        return isinstance(backend, CloudBackend) and backend.provider.speaks_responses

    def fallback(self, model: str, error: ModelLoadError) -> Route | None:
        """Where a request for a local model that failed to load may go instead, if anywhere."""
        mapped = self.mapping(model)
        if mapped is None or self._cloud is None:
            return None
        backend = self._cloud.backends.get(mapped.partition("/")[0])
        if backend is None:
            return None
        if not isinstance(error, ModelTooLargeError) and not backend.provider.allow_fallback:
            return None
        reason = (
            "it is too large for this machine"
            if isinstance(error, ModelTooLargeError)
            else ("it failed to load")
        )
        return self._cloud_route(mapped, f"{model} cannot run here ({reason})")

    def mapping(self, model: str) -> str | None:
        if self._cloud is None:
            return None
        return self._cloud.mappings.get(model.strip().lower())

    def _cloud_route(self, target: str, why: str) -> Route:
        assert self._cloud is not None
        if self._local_only():
            raise ForwardingRefusedError(
                f"Not forwarded: {why}, but local-only mode forbids sending requests to cloud "
                "providers. Turn it off with `localserve cloud local-only off`."
            )
        provider = target.partition("/")[0]
        backend = self._cloud.backends.get(provider)
        if backend is None:
            raise ModelNotFoundError(target, hint=f"No cloud provider named '{provider}'.")
        return Route(backend, target)
