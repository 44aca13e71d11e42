"""The loaded models: a runner per model, started on first use, at most ``max_loaded`` at once.

A request naming a library model that is not loaded starts its runner and waits for it. When
the limit is reached, the least recently used model with no request in flight is unloaded
first; if every loaded model is busy the request gets a clear 503 instead of a hang. Before a
runner starts, the fit estimate is checked against the memory free right now, so a model that
cannot fit is refused with the numbers instead of pushing the machine into swap.

Memory is given back when a model sits idle: each model is unloaded ``keep_alive`` seconds
after its last request (the daemon's setting, or the last request's ``keep_alive``). And no
request waits forever: beyond its slots plus ``max_queue`` waiting requests, a model answers
429 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from localserve.daemon.supervisor import (
    CrashPolicy,
    EventHandler,
    RunnerSpec,
    RunnerState,
    Supervisor,
    SupervisorStatus,
)
from localserve.errors import (
    BackendUnavailableError,
    ModelInUseError,
    ModelNotFoundError,
    ModelTooLargeError,
    QueueFullError,
)
from localserve.hardware.memory import sample_memory
from localserve.hub.fit import Verdict, estimate_fit
from localserve.hub.library import Library, ModelRecord, format_bytes
from localserve.hub.resolve import ResolvedModel

log = logging.getLogger(__name__)

SpecFactory = Callable[[ResolvedModel], RunnerSpec]
IDLE_CHECK_S = 0.5
# How long a model becoming busy waits for the busy ones to give threads back (one decode step;
# a long prefill step may take longer, and then it starts anyway).
THREADS_FREED_WAIT_S = 1.0


def split_threads(threads: int, runners: int) -> list[int]:
    """``threads`` split as evenly as possible between ``runners``, at least one each.

    ggml's worker threads spin while they wait for each other, so runners whose threads add up
    to more than the cores slow each other down many times over, not twofold.
    """
    base, extra = divmod(threads, runners) if runners else (0, 0)
    return [max(1, base + (index < extra)) for index in range(runners)]


@dataclass
class LoadedModel:
    supervisor: Supervisor
    keep_alive: float
    in_flight: int = 0
    last_used: float = 0.0

    def idle_expired(self, now: float) -> bool:
        return (
            self.keep_alive >= 0
            and self.in_flight == 0
            and self.supervisor.state is RunnerState.READY
            and now - self.last_used >= self.keep_alive
        )


class ModelPool:
    """Which models have a runner, and starting, sharing and evicting them."""

    def __init__(
        self,
        library: Library,
        spec_for: SpecFactory,
        *,
        start_timeout: float,
        max_loaded: int,
        default: ResolvedModel,
        gpu_offload: bool = False,
        on_event: EventHandler | None = None,
        keep_alive: float = -1.0,
        max_queue: int = 32,
        crash_policy: CrashPolicy | None = None,
        cpu_threads: int = 0,
    ) -> None:
        """``cpu_threads``: the threads to split between busy runners (0 = no splitting)."""
        self.library = library
        self._cpu_threads = cpu_threads
        self._keep_alive = keep_alive
        self._max_queue = max_queue
        self._crash_policy = crash_policy
        self.default = default
        self._spec_for = spec_for
        self._start_timeout = start_timeout
        self._max_loaded = max_loaded
        self.gpu_offload = gpu_offload  # whether this llama.cpp build can offload to a GPU
        self._on_event = on_event
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = asyncio.Lock()

    @property
    def start_timeout(self) -> float:
        return self._start_timeout

    # -- names -----------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        """Every model a request may name: the default first, then the library."""
        names = [self.default.model_id]
        names += [r.name for r in self.library.records() if r.name != self.default.model_id]
        return names

    def serves(self, model_id: str) -> bool:
        return self.resolve(model_id) is not None

    def resolve(self, model_id: str) -> ResolvedModel | None:
        wanted = model_id.strip().lower()
        if wanted == self.default.model_id:
            return self.default
        record = self.library.find(wanted)
        if record is None:
            return None
        return ResolvedModel(record.name, self.library.paths(record)[0])

    # -- use -------------------------------------------------------------------------------
    async def acquire(self, model_id: str, keep_alive: float | None = None) -> Supervisor:
        """The supervisor of ``model_id``, started if needed; pair with ``release``.
        ``keep_alive`` (seconds) replaces the model's idle time before unloading."""
        async with self._lock:
            entry = self._loaded.get(model_id.strip().lower())
            if entry is None or entry.supervisor.state is RunnerState.STOPPED:
                entry = await self._load_locked(model_id)
            slots = int(entry.supervisor.status().info.get("parallel") or 1)
            if entry.in_flight >= slots + self._max_queue:
                raise QueueFullError(
                    f"{entry.supervisor.spec.model_id} is busy: {slots} requests are being "
                    f"answered and {entry.in_flight - slots} are waiting (max_queue is "
                    f"{self._max_queue}). Retry shortly."
                )
            entry.in_flight += 1
            entry.last_used = time.monotonic()
            if keep_alive is not None:
                entry.keep_alive = keep_alive
            slowed = self._share_cpu()  # nothing changes unless a runner became busy or restarted
        supervisor = entry.supervisor
        if slowed:
            try:
                await self._threads_freed(slowed, supervisor)
            except BaseException:  # cancelled: the caller will not release what it never got
                self.release(supervisor)
                raise
        return supervisor

    def release(self, supervisor: Supervisor) -> None:
        entry = self._loaded.get(supervisor.spec.model_id)
        if entry is not None and entry.supervisor is supervisor:
            entry.in_flight = max(0, entry.in_flight - 1)
            entry.last_used = time.monotonic()
            if entry.in_flight == 0:
                self._share_cpu()

    def _share_cpu(self) -> list[Supervisor]:
        """Give each runner with requests in flight its part of the CPU threads, and return
        those now given fewer. Called on every request and when a runner stops being busy; an
        idle runner keeps its last grant until it is busy again (it spends no CPU meanwhile)."""
        if self._cpu_threads <= 0:
            return []
        busy = [entry.supervisor for entry in self._loaded.values() if entry.in_flight > 0]
        shares = split_threads(self._cpu_threads, len(busy))
        return [
            supervisor
            for supervisor, threads in zip(busy, shares, strict=True)
            if supervisor.grant_threads(threads)
        ]

    @staticmethod
    async def _threads_freed(slowed: list[Supervisor], starting: Supervisor) -> None:
        """Let ``starting`` begin once the busy runners given fewer threads use them (within
        one decode step): a step run while both hold the same cores takes seconds, not ms."""
        others = [supervisor for supervisor in slowed if supervisor is not starting]
        await asyncio.gather(*(s.threads_applied(THREADS_FREED_WAIT_S) for s in others))

    async def load(self, model_id: str) -> Supervisor:
        """Start (or restart, if it failed) the runner of ``model_id`` without a request."""
        async with self._lock:
            entry = self._loaded.get(model_id.strip().lower())
            if entry is not None and entry.supervisor.state is RunnerState.FAILED:
                await self._unload_locked(entry.supervisor.spec.model_id)
                entry = None
            if entry is None or entry.supervisor.state is RunnerState.STOPPED:
                entry = await self._load_locked(model_id)
            entry.last_used = time.monotonic()
            return entry.supervisor

    async def unload(self, model_id: str) -> bool:
        """Stop the runner of ``model_id``; False when it was not loaded."""
        async with self._lock:
            return await self._unload_locked(model_id.strip().lower())

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
            now = time.monotonic()
            expired = [name for name, entry in self._loaded.items() if entry.idle_expired(now)]
            for name in expired:
                log.info("Unloading %s: idle for its keep_alive", name)
                await self._unload_locked(name)
            return expired

    async def run_idle_unloader(self) -> None:
        """Give memory back: check for idle models twice a second, until cancelled."""
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            try:
                await self.unload_idle()
            except Exception:  # a failed stop must not end the checks
                log.exception("Unloading an idle model failed")

    def status(self) -> list[SupervisorStatus]:
        return [entry.supervisor.status() for entry in self._loaded.values()]

    def in_flight(self) -> int:
        """Requests being answered by any loaded model (streams count until they close)."""
        return sum(entry.in_flight for entry in self._loaded.values())

    def runner_pids(self) -> dict[str, int]:
        pids = {name: entry.supervisor.status().pid for name, entry in self._loaded.items()}
        return {name: pid for name, pid in pids.items() if pid is not None}

    def is_loaded(self, model_id: str) -> bool:
        return model_id.strip().lower() in self._loaded

    async def stop_all(self) -> None:
        async with self._lock:
            for model_id in list(self._loaded):
                await self._unload_locked(model_id)

    # -- inside the lock ---------------------------------------------------------------------
    async def _load_locked(self, model_id: str) -> LoadedModel:
        model = self.resolve(model_id)
        if model is None:
            raise ModelNotFoundError(model_id, self.model_ids())
        spec = self._spec_for(model)
        record = self.library.find(model.model_id)
        if record is not None:  # None: a file outside the library, served with --model PATH
            # Refuse before unloading anything if even the memory of idle runners is not enough.
            self._check_fit(record, spec, reclaimable=self._idle_runner_bytes())
        await self._make_room_locked()
        if record is not None:
            self._check_fit(record, spec)
        supervisor = Supervisor(spec, self._start_timeout, self._on_event, self._crash_policy)
        entry = LoadedModel(supervisor, self._keep_alive, last_used=time.monotonic())
        self._loaded[model.model_id] = entry
        log.info("Loading %s", model.model_id)
        supervisor.start()
        return entry

    async def _make_room_locked(self) -> None:
        live = {
            name: entry
            for name, entry in self._loaded.items()
            if entry.supervisor.state not in (RunnerState.FAILED, RunnerState.STOPPED)
        }
        # Failed or stopped runners hold no memory: drop their entries first.
        for name in [name for name in self._loaded if name not in live]:
            await self._unload_locked(name)
        while len(live) >= self._max_loaded:
            idle = [(e.last_used, name) for name, e in live.items() if e.in_flight == 0]
            if not idle:
                raise BackendUnavailableError(
                    f"All {len(live)} loaded models are busy and max_loaded_models is "
                    f"{self._max_loaded}; try again shortly or raise max_loaded_models."
                )
            _, victim = min(idle)
            log.info("Unloading %s to make room (max_loaded_models=%d)", victim, self._max_loaded)
            await self._unload_locked(victim)
            del live[victim]

    async def _unload_locked(self, model_id: str) -> bool:
        entry = self._loaded.pop(model_id, None)
        if entry is None:
            return False
        await entry.supervisor.stop()
        return True

    def _idle_runner_bytes(self) -> int:
        """Memory that unloading idle runners would give back (their RSS)."""
        total = 0
        for entry in self._loaded.values():
            pid = entry.supervisor.status().pid
            if entry.in_flight == 0 and pid is not None:
                with contextlib.suppress(psutil.Error):
                    total += psutil.Process(pid).memory_info().rss
        return total

    def _check_fit(self, record: ModelRecord, spec: RunnerSpec, reclaimable: int = 0) -> None:
        sampled = sample_memory()
        memory = dataclasses.replace(sampled, ram_free_bytes=sampled.ram_free_bytes + reclaimable)
        fit = estimate_fit(record, memory, spec.n_ctx or None, spec.parallel or 1, self.gpu_offload)
        if fit.verdict is Verdict.TOO_LARGE:
            raise ModelTooLargeError(
                f"{record.name} needs about {format_bytes(fit.total_bytes)} "
                f"(weights {format_bytes(fit.weights_bytes)}, KV cache "
                f"{format_bytes(fit.kv_cache_bytes)}) but only "
                f"{format_bytes(memory.ram_free_bytes)} of RAM is free or reclaimable. "
                "Unload other models, lower ctx, or pick a smaller quant."
            )
