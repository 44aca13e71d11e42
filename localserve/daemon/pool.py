"""The loaded models: a runner per model, started on first use, at most ``max_loaded`` at once.

``ModelPool`` coordinates; each policy is its own unit, on plain data, with fast tests:
- ``admission``: a request is in flight from ``acquire`` to ``release``; beyond a model's slots
  plus ``max_queue`` waiting requests it answers 429 at once, so no request waits forever.
- ``cpu_share``: the CPU threads split between the runners that are busy right now.
- ``eviction``: at the limit, the least recently used idle model is unloaded first; if every
  loaded model is busy the request gets a clear 503 instead of a hang.
- ``idle``: a model is unloaded ``keep_alive`` seconds after its last request.
- ``fit_check``: before a runner starts, its fit estimate is checked against the memory free
  right now, so a model that cannot fit is refused with the numbers instead of pushing the
  machine into swap.
All changes to the loaded models happen under one lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from localserve.api.presets import ENGINE_KEYS
from localserve.daemon.admission import ModelUse
from localserve.daemon.cpu_share import share_threads, threads_freed
from localserve.daemon.eviction import make_room
from localserve.daemon.fit_check import check_fit, free_memory, resident_bytes
from localserve.daemon.idle import expired, keep_unloading
from localserve.daemon.spare import SpareRunner
from localserve.daemon.supervisor import (
    CrashPolicy,
    EventHandler,
    RunnerSpec,
    RunnerState,
    Supervisor,
    SupervisorStatus,
)
from localserve.errors import ModelInUseError, ModelNotFoundError
from localserve.hub.library import Library, ModelRecord
from localserve.hub.resolve import ResolvedModel

log = logging.getLogger(__name__)

SpecFactory = Callable[[ResolvedModel], RunnerSpec]


@dataclass(frozen=True)
class PoolLimits:
    """How many models stay loaded, how many requests each takes, and how long they wait."""

    max_loaded: int
    start_timeout: float  # seconds a request waits for a runner to be ready
    keep_alive: float = -1.0  # seconds idle before a model is unloaded; negative: never
    max_queue: int = 32  # requests waiting for a model beyond its slots
    cpu_threads: int = 0  # the threads split between busy runners; 0: no splitting


@dataclass
class LoadedModel:
    supervisor: Supervisor
    use: ModelUse


class ModelPool:
    """Which models have a runner, and starting, sharing and evicting them."""

    def __init__(
        self,
        library: Library,
        spec_for: SpecFactory,
        limits: PoolLimits,
        *,
        default: ResolvedModel,
        gpu_offload: bool = False,
        on_event: EventHandler | None = None,
        crash_policy: CrashPolicy | None = None,
        spare: SpareRunner | None = None,
    ) -> None:
        self.library = library
        self.spare = spare  # a runner started ahead after each unload (daemon/spare.py)
        self.default = default
        self.limits = limits
        self.gpu_offload = gpu_offload  # whether this llama.cpp build can offload to a GPU
        self._spec_for = spec_for
        self._on_event = on_event
        self._crash_policy = crash_policy
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = asyncio.Lock()

    @property
    def start_timeout(self) -> float:
        return self.limits.start_timeout

    # -- names -----------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        """Every model a request may name: the default first, then the library."""
        names = [self.default.model_id]
        names += [r.name for r in self.library.records() if r.name != self.default.model_id]
        return names

    def capabilities(self, model_id: str) -> list[str]:
        """What the model can do (``ModelRecord.capabilities``); [] for an unknown model."""
        record = self.library.find(model_id)
        if record is None and model_id == self.default.model_id:
            record = self.library.starter_record()
        return record.capabilities() if record else []

    def serves(self, model_id: str) -> bool:
        return self.resolve(model_id) is not None

    def resolve(self, model_id: str) -> ResolvedModel | None:
        wanted = model_id.strip().lower()
        if wanted == self.default.model_id:
            return self.default
        record = self.library.find(wanted)
        if record is None:
            return None
        return ResolvedModel(
            record.name, self.library.paths(record)[0], self.library.mmproj_path(record)
        )

    # -- use -------------------------------------------------------------------------------
    async def acquire(self, model_id: str, keep_alive: float | None = None) -> Supervisor:
        """The supervisor of ``model_id``, started if needed; pair with ``release``.
        ``keep_alive`` (seconds) replaces the model's idle time before unloading."""
        async with self._lock:
            entry = self._loaded.get(model_id.strip().lower())
            if entry is None or entry.supervisor.state is RunnerState.STOPPED:
                entry = await self._load_locked(model_id)
            supervisor = entry.supervisor
            slots = int(supervisor.status().info.get("parallel") or 1)
            entry.use.admit(
                supervisor.spec.model_id, slots, self.limits.max_queue, time.monotonic(), keep_alive
            )
            slowed = self._share_cpu()  # nothing changes unless a runner became busy or restarted
        if slowed:
            try:
                await threads_freed(slowed, supervisor)
            except BaseException:  # cancelled: the caller will not release what it never got
                self.release(supervisor)
                raise
        return supervisor

    def release(self, supervisor: Supervisor) -> None:
        entry = self._loaded.get(supervisor.spec.model_id)
        if entry is None or entry.supervisor is not supervisor:
            return  # unloaded (or replaced) while the request ran
        if entry.use.leave(time.monotonic()):
            self._share_cpu()

    def _share_cpu(self) -> list[Supervisor]:
        """Give each runner with requests in flight its part of the CPU threads (on every
        request, and when a runner stops being busy); the runners now given fewer."""
        busy = [entry.supervisor for entry in self._loaded.values() if not entry.use.idle]
        return share_threads(self.limits.cpu_threads, busy)

    async def load(self, model_id: str) -> Supervisor:
        """Start (or restart, if it failed) the runner of ``model_id`` without a request."""
        async with self._lock:
            entry = self._loaded.get(model_id.strip().lower())
            if entry is not None and entry.supervisor.state is RunnerState.FAILED:
                await self._unload_locked(entry.supervisor.spec.model_id)
                entry = None
            if entry is None or entry.supervisor.state is RunnerState.STOPPED:
                entry = await self._load_locked(model_id)
            entry.use.last_used = time.monotonic()
            return entry.supervisor

    async def unload(self, model_id: str) -> bool:
        """Stop the runner of ``model_id``; False when it was not loaded."""
        async with self._lock:
            unloaded = await self._unload_locked(model_id.strip().lower())
            if unloaded:
                await self._prepare_spare()
            return unloaded

    async def remove(self, model_id: str) -> ModelRecord:
        """Unload a library model if loaded, then delete it (not the model served by default)."""
        record = self.library.get(model_id)
        if record.name == self.default.model_id:
            raise ModelInUseError(
                f"{record.name} is the model this daemon serves by default; serve another "
                "model first."
            )
        await self.unload(record.name)
        await asyncio.to_thread(self.library.remove, record.name)
        return record

    async def unload_idle(self) -> list[str]:
        """Unload every model idle for longer than its keep_alive; the names unloaded."""
        async with self._lock:
            ready = {
                name: entry.use
                for name, entry in self._loaded.items()
                if entry.supervisor.state is RunnerState.READY
            }
            names = expired(ready, time.monotonic())
            for name in names:
                log.info("Unloading %s: idle for its keep_alive", name)
                await self._unload_locked(name)
            if names:
                await self._prepare_spare()
            return names

    async def run_idle_unloader(self) -> None:
        """Give memory back: check for idle models twice a second, until cancelled."""
        await keep_unloading(self.unload_idle)

    def status(self) -> list[SupervisorStatus]:
        return [entry.supervisor.status() for entry in self._loaded.values()]

    def preset_changed(self, model_id: str, keys: set[str]) -> bool:
        """A loaded model's preset changed: its new keep_alive from now on, and after an
        engine key (context, offload, cache types...) it is unloaded once idle, so the next
        request loads it with them; True in that case."""
        entry = self._loaded.get(model_id)
        model = self.resolve(model_id)
        if entry is None or model is None:
            return False
        spec = self._spec_for(model)
        if "keep_alive" in keys:
            entry.use.keep_alive = (
                spec.keep_alive if spec.keep_alive is not None else self.limits.keep_alive
            )
        if keys & ENGINE_KEYS:
            entry.use.keep_alive = 0.0  # the idle unloader takes it as soon as it is idle
            log.info(
                "%s: new engine settings (%s); reloading once idle",
                model_id,
                ", ".join(sorted(keys & ENGINE_KEYS)),
            )
            return True
        return False

    def in_flight(self) -> int:
        """Requests being answered by any loaded model (streams count until they close)."""
        return sum(entry.use.in_flight for entry in self._loaded.values())

    def runner_pids(self) -> dict[str, int]:
        pids = {name: entry.supervisor.status().pid for name, entry in self._loaded.items()}
        return {name: pid for name, pid in pids.items() if pid is not None}

    def is_loaded(self, model_id: str) -> bool:
        return model_id.strip().lower() in self._loaded

    async def stop_all(self) -> None:
        async with self._lock:
            for model_id in list(self._loaded):
                await self._unload_locked(model_id)
            if self.spare is not None:
                await self.spare.stop()

    async def _prepare_spare(self) -> None:
        """After an unload: the next load, likely soon, takes a runner that has started."""
        if self.spare is not None:
            await self.spare.prepare_after_unload()

    # -- inside the lock ---------------------------------------------------------------------
    async def _load_locked(self, model_id: str) -> LoadedModel:
        model = self.resolve(model_id)
        if model is None:
            raise ModelNotFoundError(model_id, self.model_ids())
        spec = self._spec_for(model)
        record = self.library.find(model.model_id, for_load=True)  # type and size, for the fit
        if record is not None:  # None: a file outside the library, served with --model PATH
            spec = dataclasses.replace(spec, quant_type=record.quant_type)
            # Refuse before unloading anything if even the memory of idle runners is not enough.
            self._check_fit(record, spec, reclaimable=self._idle_runner_bytes())
        await self._make_room_locked()
        if record is not None:
            self._check_fit(record, spec)
        supervisor = Supervisor(
            spec, self.start_timeout, self._on_event, self._crash_policy, spare=self.spare
        )
        keep_alive = spec.keep_alive if spec.keep_alive is not None else self.limits.keep_alive
        entry = LoadedModel(supervisor, ModelUse(keep_alive, last_used=time.monotonic()))
        self._loaded[model.model_id] = entry
        log.info("Loading %s", model.model_id)
        supervisor.start()
        return entry

    async def _make_room_locked(self) -> None:
        # Failed or stopped runners hold no memory: drop their entries first.
        gone = (RunnerState.FAILED, RunnerState.STOPPED)
        for name in [name for name, e in self._loaded.items() if e.supervisor.state in gone]:
            await self._unload_locked(name)
        max_loaded = self.limits.max_loaded
        uses = {name: entry.use for name, entry in self._loaded.items()}
        for victim in make_room(uses, max_loaded):
            log.info("Unloading %s to make room (max_loaded_models=%d)", victim, max_loaded)
            await self._unload_locked(victim)

    async def _unload_locked(self, model_id: str) -> bool:
        entry = self._loaded.pop(model_id, None)
        if entry is None:
            return False
        await entry.supervisor.stop()
        return True

    def _idle_runner_bytes(self) -> int:
        """Memory that unloading idle runners would give back (their RSS)."""
        pids = [e.supervisor.status().pid for e in self._loaded.values() if e.use.idle]
        return resident_bytes(pid for pid in pids if pid is not None)

    def _check_fit(self, record: ModelRecord, spec: RunnerSpec, reclaimable: int = 0) -> None:
        memory = free_memory(reclaimable)
        engine = spec.engine
        ctx = engine.ctx or min(record.context_length or 4096, 4096)  # as the estimate
        contexts = engine.kv_contexts(ctx, engine.parallel or 1)
        check_fit(record, memory, engine.ctx or None, contexts, self.gpu_offload, engine.kv_scale)
