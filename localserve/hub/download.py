"""Download a model from the Hub into the library: resumable, verified, never half-installed.

Each file streams into ``<name>.part`` in the model's folder. A later ``pull`` after Ctrl-C or a
crash resumes from where it stopped (HTTP ``Range``): the ``.part`` stays. When the network goes
away midway (no route, DNS, refused, timeouts, Hub 5xx/429), the download waits for it
(``NetworkWait``: tries again 1, 2, 4 ... 30 s apart, for at most ``network_wait_s`` since it was
lost) and resumes by itself; progress reports say it is waiting, and why, until bytes flow again.
A web page where the file should be (a captive portal) is never written into the ``.part``.
The sha256 the Hub advertises (its LFS metadata) is checked before the file takes its real
name; a mismatch deletes the ``.part`` and fails. Free disk space is checked before the first
byte. A vision model's projector (``RemoteModel.mmproj``) comes last, into the same folder,
the same way, and must then be a clip GGUF. The record is written last, so a model appears only
when complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from filelock import FileLock, Timeout

from localserve.errors import DownloadError, InvalidModelFileError
from localserve.hub.catalog import RemoteFile, RemoteModel
from localserve.hub.client import (
    DEFAULT_NETWORK_WAIT_S,
    answer_fault,
    check_online,
    file_url,
    hub_headers,
    hub_unreachable,
)
from localserve.hub.library import (
    Library,
    ModelRecord,
    check_free_space,
    describe_projector,
    model_name_for,
    safe_file_name,
    sha256_file,
)
from localserve.hub.token import hub_token
from localserve.network import NetworkFault, fault_from_exception

log = logging.getLogger(__name__)

CHUNK = 1 << 20
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 30.0  # a connection silent this long counts as lost
FIRST_WAIT_S = 1.0
LONGEST_WAIT_S = 30.0
LOCK_NAME = ".pull.lock"  # held while a process downloads into the folder


@dataclass
class PullProgress:
    total_bytes: int
    done_bytes: int = 0
    resumed_bytes: int = 0  # already on disk from an earlier attempt
    started_at: float = 0.0
    file_name: str = ""
    waiting: NetworkFault | None = None  # set while the download waits for the network

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started_at
        fresh = self.done_bytes - self.resumed_bytes
        return fresh / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.rate
        return (self.total_bytes - self.done_bytes) / rate if rate > 0 else None


class PullCancelled(Exception):
    """Raised inside a pull when its cancel event is set; the ``.part`` files stay."""


class FaultyAnswer(Exception):
    """An HTTP answer that is a network fault (5xx, 429, a web page), to wait out or report."""

    def __init__(self, fault: NetworkFault) -> None:
        self.fault = fault
        super().__init__(fault.reason)


class NetworkWait:
    """Waits out a lost network during a download, for at most ``limit_s`` since it was lost.

    Tries again ``FIRST_WAIT_S`` later, doubling up to ``LONGEST_WAIT_S``, and a last time when
    the limit is reached. The reason is reported once when the wait starts
    (``on_change(fault)``) and once when bytes flow again (``on_change(None)``). A cancel event
    wakes it at once.
    """

    def __init__(
        self,
        limit_s: float,
        cancel: threading.Event | None,
        on_change: Callable[[NetworkFault | None], None],
    ) -> None:
        self.limit_s = limit_s
        self.cancel = cancel
        self.on_change = on_change
        self.lost_at: float | None = None
        self.next_wait = FIRST_WAIT_S

    def wait(self, fault: NetworkFault, file_name: str) -> None:
        """Sleep before the next try; raise HubUnreachableError once the limit is spent."""
        now = time.monotonic()
        if self.lost_at is None:
            self.lost_at, self.next_wait = now, FIRST_WAIT_S
            if self.limit_s > 0:
                log.warning(
                    "%s: %s; waiting up to %.0f s for the network to come back.",
                    file_name,
                    fault.reason,
                    self.limit_s,
                )
            self.on_change(fault)
        waited = now - self.lost_at
        if waited >= self.limit_s:
            spent = f" Waited {self.limit_s:g} s for the network (pull_network_wait)."
            raise hub_unreachable(
                fault,
                f"{spent if self.limit_s > 0 else ''} The partial download is kept: run the "
                "same pull again to resume.",
            )
        pause = min(self.next_wait, self.limit_s - waited)
        if self.cancel is not None:
            if self.cancel.wait(pause):
                raise PullCancelled
        else:
            time.sleep(pause)
        self.next_wait = min(LONGEST_WAIT_S, self.next_wait * 2)

    def recovered(self) -> None:
        if self.lost_at is not None:
            log.info("The network is back after %.0f s; resuming.", time.monotonic() - self.lost_at)
            self.lost_at = None
            self.on_change(None)


def pull(
    remote: RemoteModel,
    library: Library,
    *,
    name: str | None = None,
    on_progress: Callable[[PullProgress], None] | None = None,
    cancel: threading.Event | None = None,
    network_wait_s: float = DEFAULT_NETWORK_WAIT_S,
) -> ModelRecord:
    """Download ``remote`` into the library as ``name``; raises PullCancelled when cancelled.

    A lost network is waited for, ``network_wait_s`` at most (0: fail at once)."""
    check_online()
    name = name or model_name_for(remote.files[0].basename)
    folder = library.folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DownloadError(
            f"{name} is already being downloaded by another localserve process; "
            "wait for it or cancel it there."
        ) from None
    try:
        return Download(remote, folder, on_progress, cancel, network_wait_s).run(library, name)
    finally:
        lock.release()


def part_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    part = path.with_name(path.name + ".part")
    return part.stat().st_size if part.is_file() else 0


class Download:
    """The files of one model, fetched in turn into one folder, with shared progress."""

    def __init__(
        self,
        remote: RemoteModel,
        folder: Path,
        on_progress: Callable[[PullProgress], None] | None,
        cancel: threading.Event | None,
        network_wait_s: float = DEFAULT_NETWORK_WAIT_S,
    ) -> None:
        self.remote = remote
        self.targets = [(f, folder / safe_file_name(f.basename)) for f in remote.downloads]
        self.on_progress = on_progress
        self.cancel = cancel
        on_disk = sum(part_size(path) for _, path in self.targets)
        check_free_space(folder, remote.size - on_disk)
        self.progress = PullProgress(remote.size, on_disk, on_disk, time.monotonic())
        self.headers = hub_headers(hub_token())
        self.network = NetworkWait(network_wait_s, cancel, self._waiting)

    def _waiting(self, fault: NetworkFault | None) -> None:
        self.progress.waiting = fault
        self._report()

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def run(self, library: Library, name: str) -> ModelRecord:
        digests: dict[str, str] = {}
        timeout = httpx.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT)
        with httpx.Client(follow_redirects=True, timeout=timeout) as client:
            for remote_file, path in self.targets:
                self.progress.file_name = path.name
                digests[path.name] = self.fetch_file(client, remote_file, path)
        paths = [path for _, path in self.targets]
        mmproj = paths.pop() if self.remote.mmproj is not None else None
        if mmproj is not None:
            self.check_projector(mmproj)
        return library.add_downloaded(
            name, paths, digests, self.remote.repo_id, self.remote.revision, mmproj
        )

    def check_projector(self, path: Path) -> None:
        """A projector that is not one (not a clip GGUF) is deleted, and the pull fails."""
        try:
            describe_projector(path)
        except InvalidModelFileError as exc:
            path.unlink(missing_ok=True)
            raise InvalidModelFileError(
                f"{exc} It came from {self.remote.repo_id} and was deleted; pull with "
                "--no-mmproj to install the model without it."
            ) from None

    def fetch_file(self, client: httpx.Client, remote_file: RemoteFile, path: Path) -> str:
        """Download one file to ``path`` through its ``.part``; return its sha256."""
        if path.is_file() and path.stat().st_size == remote_file.size:
            return sha256_file(path)  # finished by an earlier pull whose later shard failed
        part = path.with_name(path.name + ".part")
        url = file_url(self.remote.repo_id, remote_file.name, self.remote.revision)
        while True:
            have = part.stat().st_size if part.exists() else 0
            if have >= remote_file.size:
                break
            try:
                self.stream_into(client, url, part, have)
            except httpx.HTTPError as exc:
                fault = fault_from_exception(exc, url, READ_TIMEOUT)
                self._wait_or_fail(fault, remote_file.name)
            except FaultyAnswer as answer:
                self._wait_or_fail(answer.fault, remote_file.name)
        digest = sha256_file(part)
        if remote_file.sha256 and digest != remote_file.sha256:
            part.unlink()
            raise DownloadError(
                f"{remote_file.name} is corrupt: its sha256 is {digest}, the Hub says "
                f"{remote_file.sha256}. The bad copy was deleted; pull again to retry."
            )
        part.replace(path)
        return digest

    def _wait_or_fail(self, fault: NetworkFault, file_name: str) -> None:
        if not fault.transient:  # a TLS failure or a web page: a person must act first
            raise hub_unreachable(
                fault, " The partial download is kept: run the same pull again to resume."
            )
        self.network.wait(fault, file_name)

    def stream_into(self, client: httpx.Client, url: str, part: Path, have: int) -> None:
        headers = dict(self.headers)
        if have:
            headers["Range"] = f"bytes={have}-"
        with client.stream("GET", url, headers=headers) as response:
            fault = answer_fault(response, self.remote.repo_id)
            if fault is not None:
                raise FaultyAnswer(fault)
            if response.status_code not in (200, 206):
                raise DownloadError(f"The Hub answered {response.status_code} for {url}.")
            if have and response.status_code == 200:
                have = 0  # the server ignored Range: start over
                self.progress.done_bytes -= part.stat().st_size
            with part.open("r+b" if have else "wb") as handle:
                handle.seek(have)
                for chunk in response.iter_bytes(CHUNK):
                    if self.cancel is not None and self.cancel.is_set():
                        raise PullCancelled
                    try:
                        handle.write(chunk)
                    except OSError as exc:  # disk full, most often
                        raise DownloadError(
                            f"Cannot write {part}: {exc.strerror or exc}. The partial file is kept."
                        ) from exc
                    self.progress.done_bytes += len(chunk)
                    self.network.recovered()
                    self._report()
