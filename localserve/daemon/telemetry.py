"""Live figures for the tray, `localserve status --watch` and Prometheus.

Runners report each finished generation and, about once a second while busy, the tokens their
batch loop prefilled and generated (``runner/reporting.py``). Here those reports are kept for a
rolling window (``WINDOW_S``) and summed into totals since the daemon started; memory (system RAM,
each runner's RSS, VRAM per NVIDIA GPU through NVML) is sampled every ``SAMPLE_INTERVAL_S``.

"Live" tok/s is the batch loop's rate over the ticks of the last ``LIVE_WINDOW_S``: tokens per
second of the decode steps that produced them, summed over every request sharing those steps,
and 0 when nothing ran then.

The control API's models (``api.control``, 20 ms to import) are imported where they are used:
the daemon makes its ``Telemetry`` before its first runner's handshake, and the gateway's
import brings them in while that runner loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from localserve.hardware.memory import MemorySnapshot, sample_memory

if TYPE_CHECKING:
    from localserve.api import control
    from localserve.api.control import HistoryPoint, RequestRecord

log = logging.getLogger(__name__)

WINDOW_S = 300.0
LIVE_WINDOW_S = 5.0
SAMPLE_INTERVAL_S = 2.0


@dataclass(frozen=True)
class Tick:
    model: str
    at: float  # monotonic
    prompt_tokens: int
    prompt_seconds: float
    generated_tokens: int
    generation_seconds: float


@dataclass
class ModelTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class MemoryReading:
    snapshot: MemorySnapshot
    runner_rss: dict[str, int] = field(default_factory=dict)

    @property
    def runners_rss_bytes(self) -> int:
        return sum(self.runner_rss.values())

    def stats(self) -> control.MemoryStats:
        from localserve.api import control

        snap = self.snapshot
        return control.MemoryStats(
            ram_total_bytes=snap.ram_total_bytes,
            ram_used_bytes=snap.ram_total_bytes - snap.ram_free_bytes,
            runners_rss_bytes=self.runners_rss_bytes,
            runner_rss_bytes=dict(self.runner_rss),
            gpus=[
                control.GpuMemory(
                    index=gpu.index,
                    name=gpu.name,
                    total_bytes=gpu.total_bytes,
                    used_bytes=gpu.total_bytes - gpu.free_bytes,
                )
                for gpu in snap.gpus
            ],
            # Apple Silicon's GPU shares RAM: RAM in use is the figure to watch there.
            unified_memory=sys.platform == "darwin",
        )


class Telemetry:
    def __init__(
        self,
        active_requests: Callable[[], int],
        runner_pids: Callable[[], dict[str, int]],
    ) -> None:
        self._active_requests = active_requests
        self._runner_pids = runner_pids
        self.started_at = time.time()
        self._requests: deque[RequestRecord] = deque()
        self._ticks: deque[Tick] = deque()
        self._history: deque[HistoryPoint] = deque(maxlen=int(WINDOW_S / SAMPLE_INTERVAL_S))
        self.totals: dict[str, ModelTotals] = {}
        self._kv_cache: dict[str, control.KvCacheUse] = {}  # from each runner's latest tick
        self.memory = MemoryReading(sample_memory())

    # -- input -----------------------------------------------------------------------------
    def on_runner_event(self, model_id: str, event: dict[str, Any]) -> None:
        """The supervisor's handler for runner reports."""
        kind = event.get("event")
        if kind == "request":
            self._add_request(model_id, event)
        elif kind == "tick":
            self._ticks.append(
                Tick(
                    model_id,
                    time.monotonic(),
                    int(event["prompt_tokens"]),
                    float(event["prompt_seconds"]),
                    int(event["generated_tokens"]),
                    float(event["generation_seconds"]),
                )
            )
            self._take_kv_cache(model_id, event)
        self._trim()

    def _take_kv_cache(self, model_id: str, event: dict[str, Any]) -> None:
        per_cell = int(event.get("kv_bytes_per_cell") or 0)
        if per_cell:
            from localserve.api import control

            self._kv_cache[model_id] = control.KvCacheUse(
                used_bytes=int(event.get("kv_cells_used") or 0) * per_cell,
                reserved_bytes=int(event.get("kv_cells") or 0) * per_cell,
            )

    def _add_request(self, model_id: str, event: dict[str, Any]) -> None:
        from localserve.api.control import RequestRecord

        record = RequestRecord(
            model=model_id,
            finished_at=time.time(),
            prompt_tokens=int(event["prompt_tokens"]),
            cached_tokens=int(event.get("cached_tokens") or 0),
            completion_tokens=int(event["completion_tokens"]),
            ttft_s=event.get("ttft_s"),
            prompt_tps=event.get("prompt_tps"),
            generation_tps=event.get("generation_tps"),
            duration_s=float(event.get("duration_s") or 0.0),
            finish_reason=str(event.get("finish_reason") or ""),
        )
        self._requests.append(record)
        totals = self.totals.setdefault(model_id, ModelTotals())
        totals.requests += 1
        totals.prompt_tokens += record.prompt_tokens
        totals.completion_tokens += record.completion_tokens

    def _trim(self) -> None:
        wall_cutoff = time.time() - WINDOW_S
        while self._requests and self._requests[0].finished_at < wall_cutoff:
            self._requests.popleft()
        live_cutoff = time.monotonic() - WINDOW_S
        while self._ticks and self._ticks[0].at < live_cutoff:
            self._ticks.popleft()

    def sample(self) -> None:
        """Read memory now and add a history point (called every SAMPLE_INTERVAL_S)."""
        from localserve.api.control import HistoryPoint

        rss: dict[str, int] = {}
        for model_id, pid in self._runner_pids().items():
            with contextlib.suppress(psutil.Error):
                rss[model_id] = psutil.Process(pid).memory_info().rss
        # A runner that stopped has given its KV cache back.
        self._kv_cache = {m: kv for m, kv in self._kv_cache.items() if m in rss}
        self.memory = MemoryReading(sample_memory(), rss)
        generation, prompt = self.live_rates()
        snap = self.memory.snapshot
        self._history.append(
            HistoryPoint(
                time=time.time(),
                generation_tps=generation,
                prompt_tps=prompt,
                active_requests=self._active_requests(),
                ram_used_bytes=snap.ram_total_bytes - snap.ram_free_bytes,
                runners_rss_bytes=self.memory.runners_rss_bytes,
                vram_used_bytes=sum(g.total_bytes - g.free_bytes for g in snap.gpus),
            )
        )
        self._trim()

    async def run_sampler(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sample)
            except Exception:
                log.exception("Memory sampling failed")
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    # -- output ----------------------------------------------------------------------------
    def live_rates(self) -> tuple[float, float]:
        """(generation, prompt) tokens per second of the steps doing that work, over the ticks
        of the last LIVE_WINDOW_S; 0 when none did."""
        cutoff = time.monotonic() - LIVE_WINDOW_S
        recent = [tick for tick in self._ticks if tick.at >= cutoff]
        generation_s = sum(tick.generation_seconds for tick in recent)
        prompt_s = sum(tick.prompt_seconds for tick in recent)
        generated = sum(tick.generated_tokens for tick in recent)
        prompt = sum(tick.prompt_tokens for tick in recent)
        return (
            generated / generation_s if generation_s > 0 else 0.0,
            prompt / prompt_s if prompt_s > 0 else 0.0,
        )

    def snapshot(self, history: bool = False) -> control.StatsSnapshot:
        from localserve.api import control

        self._trim()
        generation, prompt = self.live_rates()
        requests = list(self._requests)
        ttfts = [r.ttft_s for r in requests if r.ttft_s is not None]
        rates = [r.generation_tps for r in requests if r.generation_tps is not None]
        return control.StatsSnapshot(
            time=time.time(),
            uptime_s=time.time() - self.started_at,
            live=control.LiveRates(
                generation_tps=generation,
                prompt_tps=prompt,
                active_requests=self._active_requests(),
                window_s=LIVE_WINDOW_S,
            ),
            recent=control.RecentRequests(
                window_s=WINDOW_S,
                requests=len(requests),
                ttft_p50_s=statistics.median(ttfts) if ttfts else None,
                ttft_max_s=max(ttfts) if ttfts else None,
                generation_tps_mean=statistics.fmean(rates) if rates else None,
            ),
            totals=control.Totals(
                requests=sum(t.requests for t in self.totals.values()),
                prompt_tokens=sum(t.prompt_tokens for t in self.totals.values()),
                completion_tokens=sum(t.completion_tokens for t in self.totals.values()),
                by_model={
                    name: control.ModelTotals.model_validate(asdict(t))
                    for name, t in self.totals.items()
                },
            ),
            last_request=requests[-1] if requests else None,
            # The KV cache as of each runner's latest step, not the last memory sample's.
            memory=self.memory.stats().model_copy(update={"kv_cache": dict(self._kv_cache)}),
            history=list(self._history) if history else None,
        )
