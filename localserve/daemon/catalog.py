"""The daemon's models and pulls behind the gateway's narrow interfaces (``server/ports.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from localserve.api.presets import ModelPreset
from localserve.config.preset_store import PresetStore
from localserve.daemon.pool import ModelPool
from localserve.daemon.pulls import PullManager
from localserve.hub.library import ModelRecord
from localserve.server.ports import LoadedModel, PullUpdate


class PoolCatalog:
    """``ModelCatalog`` over the model pool and its library."""

    def __init__(self, pool: ModelPool, presets: PresetStore | None = None) -> None:
        self._pool = pool
        self._presets = presets or PresetStore(None)

    def preset(self, name: str) -> ModelPreset | None:
        return self._presets.get(name)

    def installed(self) -> list[ModelRecord]:
        return self._pool.library.records()

    def find(self, name: str) -> ModelRecord | None:
        return self._pool.library.find(name)

    def names(self) -> list[str]:
        return self._pool.model_ids()

    def loaded(self) -> list[LoadedModel]:
        return [
            LoadedModel(status.model_id, bool(status.info.get("gpu_layers")))
            for status in self._pool.status()
        ]

    async def load(self, name: str) -> None:
        supervisor = await self._pool.load(name)
        await supervisor.ready(self._pool.start_timeout)

    async def unload(self, name: str) -> bool:
        return await self._pool.unload(name)

    async def unload_if_loaded(self, name: str) -> None:
        if self._pool.is_loaded(name):
            await self._pool.unload(name)

    async def remove(self, name: str) -> ModelRecord:
        return await self._pool.remove(name)


class ManagerPulls:
    """``ModelPulls`` over the pull manager."""

    def __init__(self, pulls: PullManager) -> None:
        self._pulls = pulls

    async def pull(self, spec: str) -> AsyncIterator[PullUpdate]:
        job, _ = await self._pulls.start(spec)
        async for snapshot in self._pulls.follow(job):
            yield PullUpdate(
                state=snapshot.state,
                file=snapshot.files[0],
                total_bytes=snapshot.total_bytes,
                done_bytes=snapshot.done_bytes,
                waiting_reason=snapshot.waiting_reason,
                error=snapshot.error,
                failure=job.failure if job.finished else None,
            )
