"""What the gateway needs of the daemon, as narrow interfaces: the server never imports the
daemon, and its routes are tested against stand-ins of their own (``tests/helpers``).

- Ollama's ``/api/tags``, ``show``, ``ps``, ``pull`` and ``delete`` (and its load-only
  ``generate``) use ``ModelCatalog`` and ``ModelPulls``, which ``daemon/catalog.py`` adapts
  from the pool and the pull manager.
- The control API uses ``ModelControl``, ``PullControl``, ``StatsSource`` and
  ``RemoteSwitch``, which the daemon's pool, pull manager, telemetry and remote access meet as
  they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from localserve.api.control import (
    DaemonStatus,
    PullSnapshot,
    PullState,
    RemoteStatus,
    StatsSnapshot,
)
from localserve.api.presets import ModelPreset
from localserve.api.runner import RunnerEndpoint
from localserve.errors import LocalserveError
from localserve.hub.client import HubOptions
from localserve.hub.library import Library, ModelRecord
from localserve.hub.resolve import ResolvedModel


@dataclass
class ForwardingPolicy:
    """Switches that decide whether requests may leave this machine (changed at run time)."""

    local_only: bool = False


@dataclass(frozen=True)
class LoadedModel:
    """A model with a runner, as the Ollama API reports it."""

    name: str
    on_gpu: bool  # some of its layers are offloaded


class ModelCatalog(Protocol):
    """The installed models, and loading them."""

    def installed(self) -> list[ModelRecord]: ...

    def find(self, name: str) -> ModelRecord | None: ...

    def preset(self, name: str) -> ModelPreset | None:
        """The model's own settings (``config.toml``'s ``[models."NAME"]``), if any."""
        ...

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


# -- the control API's ------------------------------------------------------------------------
class RunnerStatus(Protocol):
    """A loaded model's state as its supervisor reports it (the daemon's ``SupervisorStatus``)."""

    @property
    def model_id(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def restarts(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def info(self) -> Mapping[str, Any]: ...


class ModelRunner(Protocol):
    """One model's runner (the daemon's ``Supervisor``)."""

    async def ready(self, timeout: float) -> RunnerEndpoint: ...

    def status(self) -> RunnerStatus: ...


class ModelControl(Protocol):
    """The model library and the runners of the loaded models (the daemon's ``ModelPool``)."""

    @property
    def library(self) -> Library: ...

    @property
    def default(self) -> ResolvedModel: ...

    @property
    def gpu_offload(self) -> bool: ...

    @property
    def start_timeout(self) -> float: ...

    def model_ids(self) -> list[str]: ...

    def resolve(self, model_id: str) -> ResolvedModel | None: ...

    def status(self) -> Sequence[RunnerStatus]: ...

    def preset_changed(self, model_id: str, keys: set[str]) -> bool: ...

    async def load(self, model_id: str) -> ModelRunner: ...

    async def unload(self, model_id: str) -> bool: ...

    async def remove(self, model_id: str) -> ModelRecord: ...


class PullJob(Protocol):
    def snapshot(self) -> PullSnapshot: ...


JobT = TypeVar("JobT", bound=PullJob)


class PullControl(Protocol[JobT]):
    """Downloads run by the daemon (its ``PullManager``)."""

    @property
    def hub(self) -> HubOptions: ...

    async def start(self, spec: str, name: str | None = None) -> tuple[JobT, bool]: ...

    def jobs(self) -> list[JobT]: ...

    def get(self, job_id: str) -> JobT | None: ...

    def cancel(self, job: JobT) -> None: ...

    def follow(self, job: JobT) -> AsyncIterator[PullSnapshot]: ...


class StatsSource(Protocol):
    """Live figures (the daemon's ``Telemetry``)."""

    def snapshot(self, history: bool = False) -> StatsSnapshot: ...


class RemoteSwitch(Protocol):
    """The TLS listener for other devices (the daemon's ``RemoteAccess``)."""

    def status(self) -> RemoteStatus: ...

    async def enable(self, interface: str | None, port: int | None) -> RemoteStatus: ...

    async def disable(self) -> RemoteStatus: ...


StatusProvider = Callable[[], Awaitable[DaemonStatus]]
