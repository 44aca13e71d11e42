"""What the gateway's model-management endpoints need of the daemon, as narrow interfaces.

Ollama's ``/api/tags``, ``show``, ``ps``, ``pull`` and ``delete`` (and its load-only
``generate``) read and change the installed models; they depend on these two protocols, which
the daemon meets (``daemon/catalog.py``), so the server never imports the daemon and the
routes can be tested against a catalog of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from localserve.api.control import PullState
from localserve.errors import LocalserveError
from localserve.hub.library import ModelRecord


@dataclass(frozen=True)
class LoadedModel:
    """A model with a runner, as the Ollama API reports it."""

    name: str
    on_gpu: bool  # some of its layers are offloaded


class ModelCatalog(Protocol):
    """The installed models, and loading them."""

    def installed(self) -> list[ModelRecord]: ...

    def find(self, name: str) -> ModelRecord | None: ...

    def names(self) -> list[str]:
        """Every model name a request may use (for "did you mean" in errors)."""
        ...

    def loaded(self) -> list[LoadedModel]: ...

    async def load(self, name: str) -> None:
        """Start the model's runner and wait until it serves."""
        ...

    async def unload(self, name: str) -> bool:
        """Stop its runner; False when it had none."""
        ...

    async def unload_if_loaded(self, name: str) -> None: ...

    async def remove(self, name: str) -> ModelRecord:
        """Unload and delete an installed model."""
        ...


@dataclass(frozen=True)
class PullUpdate:
    """Where a download stands; the last update of a pull is done, failed or cancelled."""

    state: PullState
    file: str
    total_bytes: int
    done_bytes: int
    waiting_reason: str | None = None
    error: str | None = None
    failure: LocalserveError | None = None  # why it failed, for the HTTP status


class ModelPulls(Protocol):
    """Downloading models from the Hub."""

    def pull(self, spec: str) -> AsyncIterator[PullUpdate]:
        """Start (or join) the pull of ``REPO[:QUANT|:FILE]`` and follow it to its end. A repo
        or quant that does not exist raises before the first update."""
        ...
