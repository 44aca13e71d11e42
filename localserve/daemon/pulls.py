"""Downloads run by the daemon, so they outlive the window or terminal that started them.

Each pull runs ``hub.download.pull`` in a worker thread. A second request for the same files
while one is running joins it (same job id) instead of downloading twice. Watchers read a job
through ``follow``, which yields a fresh ``PullSnapshot`` (``api/control.py``) at most
``PROGRESS_INTERVAL_S`` apart and ends with the final state. Finished jobs are kept (the last
``KEEP_FINISHED``) so a client that reconnects can still read how a pull ended. A job whose
network went away is ``waiting`` (``waiting_reason`` says why) until bytes flow again or the
wait limit is spent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from localserve.api.control import ACTIVE_PULL_STATES, PullSnapshot, PullState
from localserve.errors import LocalserveError
from localserve.hub.client import HUB, HubOptions
from localserve.hub.library import Library

if TYPE_CHECKING:  # the Hub's catalog and downloads are imported at the first pull
    from localserve.hub.catalog import RemoteModel
    from localserve.hub.download import PullProgress

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
KEEP_FINISHED = 50


@dataclass
class PullJob:
    id: str
    repo_id: str
    files: list[str]
    name: str | None
    total_bytes: int
    state: PullState = PullState.RUNNING
    done_bytes: int = 0
    bytes_per_second: float = 0.0
    eta_seconds: float | None = None
    model: str | None = None  # the library name, once installed
    error: str | None = None
    error_type: str | None = None
    failure: LocalserveError | None = field(default=None, repr=False)  # for the HTTP status
    waiting_reason: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    changed: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        return self.repo_id, tuple(self.files)

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_PULL_STATES

    def snapshot(self) -> PullSnapshot:
        return PullSnapshot(
            id=self.id,
            repo_id=self.repo_id,
            files=list(self.files),
            state=self.state,
            total_bytes=self.total_bytes,
            done_bytes=self.done_bytes,
            bytes_per_second=round(self.bytes_per_second, 1),
            eta_seconds=None if self.eta_seconds is None else round(self.eta_seconds, 1),
            model=self.model,
            error=self.error,
            error_type=self.error_type,
            waiting_reason=self.waiting_reason,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


class PullManager:
    def __init__(self, library: Library, hub: HubOptions | None = None) -> None:
        self._library = library
        self.hub = hub or HubOptions()  # the control API's Hub calls use it too
        self._jobs: dict[str, PullJob] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, spec: str, name: str | None = None) -> tuple[PullJob, bool]:
        """Start pulling ``REPO[:QUANT|:FILE]``; returns the job and whether it joined one.

        Resolving the repo happens here, so a missing repo or quant fails this call (404).
        """
        from localserve.hub.catalog import choose_model, parse_pull_spec, repo_models

        self._loop = asyncio.get_running_loop()
        repo, selector = parse_pull_spec(spec)
        remote = await asyncio.to_thread(
            lambda: choose_model(repo, selector, repo_models(repo, timeout_s=self.hub.timeout_s))
        )
        files = [f.name for f in remote.files]
        for job in self._jobs.values():
            if not job.finished and job.key == (remote.repo_id, tuple(files)):
                return job, True
        job = PullJob(secrets.token_hex(6), remote.repo_id, files, name, remote.size)
        job.changed = self._loop.create_future()
        self._jobs[job.id] = job
        self._forget_old()
        threading.Thread(
            target=self._run, args=(job, remote), name=f"pull-{job.id}", daemon=True
        ).start()
        log.info("Pull %s started: %s %s", job.id, remote.repo_id, files[0])
        return job, False

    def jobs(self) -> list[PullJob]:
        return sorted(self._jobs.values(), key=lambda job: job.started_at, reverse=True)

    def get(self, job_id: str) -> PullJob | None:
        return self._jobs.get(job_id)

    def cancel(self, job: PullJob) -> None:
        job.cancel.set()

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel.set()

    async def follow(self, job: PullJob) -> AsyncIterator[PullSnapshot]:
        """Snapshots of ``job`` as it changes, the final one last."""
        while True:
            yield job.snapshot()
            if job.finished or job.changed is None:
                return
            await asyncio.shield(job.changed)

    # -- the worker thread -------------------------------------------------------------------
    def _run(self, job: PullJob, remote: RemoteModel) -> None:
        from localserve.hub.download import PullCancelled, pull

        last = 0.0

        def on_progress(progress: PullProgress) -> None:
            nonlocal last
            now = time.monotonic()
            job.done_bytes = progress.done_bytes
            waiting = progress.waiting
            if (waiting is None) == (job.state is PullState.WAITING):  # it changed
                job.state = PullState.RUNNING if waiting is None else PullState.WAITING
                job.waiting_reason = None if waiting is None else waiting.describe(HUB)
                last = 0.0
            if now - last >= PROGRESS_INTERVAL_S:
                last = now
                job.bytes_per_second = 0.0 if waiting else progress.rate
                job.eta_seconds = None if waiting else progress.eta_seconds
                self._notify(job)

        try:
            record = pull(
                remote,
                self._library,
                name=job.name,
                on_progress=on_progress,
                cancel=job.cancel,
                network_wait_s=self.hub.network_wait_s,
            )
        except PullCancelled:
            job.state = PullState.CANCELLED
            job.error = "Cancelled; pulling the same model again resumes where it stopped."
        except LocalserveError as exc:
            job.state, job.error, job.error_type = PullState.FAILED, str(exc), type(exc).__name__
            job.failure = exc
        except Exception as exc:  # a bug or an OS error: the job must still end, and say why
            log.exception("Pull %s failed", job.id)
            job.state, job.error, job.error_type = PullState.FAILED, str(exc), type(exc).__name__
        else:
            job.state, job.model, job.done_bytes = PullState.DONE, record.name, job.total_bytes
        job.finished_at = time.time()
        job.eta_seconds, job.waiting_reason = None, None
        log.info("Pull %s %s%s", job.id, job.state.value, f": {job.error}" if job.error else "")
        self._notify(job)

    def _notify(self, job: PullJob) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_watchers, job)

    @staticmethod
    def _wake_watchers(job: PullJob) -> None:
        """Resolve the job's current future (waking every watcher) and arm a new one."""
        current = job.changed
        job.changed = asyncio.get_running_loop().create_future()
        if current is not None and not current.done():
            current.set_result(None)

    def _forget_old(self) -> None:
        finished = [job for job in self.jobs() if job.finished]
        for job in finished[KEEP_FINISHED:]:
            del self._jobs[job.id]
