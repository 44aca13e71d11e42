"""Which backend serves a request, decided per request from the model name."""

from __future__ import annotations

from localserve.errors import ModelNotFoundError
from localserve.router.backend import Backend, ModelCard


class Router:
    def __init__(self, backends: list[Backend]) -> None:
        self._backends = backends

    def models(self) -> list[ModelCard]:
        return [card for backend in self._backends for card in backend.models()]

    def card(self, model: str) -> ModelCard:
        for card in self.models():
            if card.id == model.strip().lower():
                return card
        raise ModelNotFoundError(model, [card.id for card in self.models()])

    def backend_for(self, model: str) -> Backend:
        for backend in self._backends:
            if backend.serves(model):
                return backend
        raise ModelNotFoundError(model, [card.id for card in self.models()])
