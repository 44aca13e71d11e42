"""Download a model from the Hub into the library: resumable, verified, never half-installed.

Each file streams into ``<name>.part`` in the model's folder. A dropped connection is retried
from where it stopped (HTTP ``Range``), and so is a later ``pull`` after Ctrl-C or a crash: the
``.part`` stays. The sha256 the Hub advertises (its LFS metadata) is checked before the file
takes its real name; a mismatch deletes the ``.part`` and fails. Free disk space is checked
before the first byte. The record is written last, so a model appears only when complete.
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
from huggingface_hub import hf_hub_url
from huggingface_hub.utils._headers import build_hf_headers

from localserve.errors import DownloadError, HubError, RepoNotFoundError
from localserve.hub.catalog import RemoteFile, RemoteModel
from localserve.hub.library import (
    Library,
    ModelRecord,
    check_free_space,
    model_name_for,
    safe_file_name,
    sha256_file,
)
from localserve.hub.token import hub_token

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRIES = 5
READ_TIMEOUT = 60.0
LOCK_NAME = ".pull.lock"  # held while a process downloads into the folder


@dataclass
class PullProgress:
    total_bytes: int
    done_bytes: int = 0
    resumed_bytes: int = 0  # already on disk from an earlier attempt
    started_at: float = 0.0
    file_name: str = ""

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


def pull(
    remote: RemoteModel,
    library: Library,
    *,
    name: str | None = None,
    on_progress: Callable[[PullProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> ModelRecord:
    """Download ``remote`` into the library as ``name``; raises PullCancelled when cancelled."""
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
        return Download(remote, folder, on_progress, cancel).run(library, name)
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
    ) -> None:
        self.remote = remote
        self.targets = [(f, folder / safe_file_name(f.basename)) for f in remote.files]
        self.on_progress = on_progress
        self.cancel = cancel
        on_disk = sum(part_size(path) for _, path in self.targets)
        check_free_space(folder, remote.size - on_disk)
        self.progress = PullProgress(remote.size, on_disk, on_disk, time.monotonic())
        self.headers = build_hf_headers(token=hub_token())

    def run(self, library: Library, name: str) -> ModelRecord:
        digests: dict[str, str] = {}
        timeout = httpx.Timeout(30.0, read=READ_TIMEOUT)
        with httpx.Client(follow_redirects=True, timeout=timeout) as client:
            for remote_file, path in self.targets:
                self.progress.file_name = path.name
                digests[path.name] = self.fetch_file(client, remote_file, path)
        paths = [path for _, path in self.targets]
        return library.add_downloaded(
            name, paths, digests, self.remote.repo_id, self.remote.revision
        )

    def fetch_file(self, client: httpx.Client, remote_file: RemoteFile, path: Path) -> str:
        """Download one file to ``path`` through its ``.part``; return its sha256."""
        if path.is_file() and path.stat().st_size == remote_file.size:
            return sha256_file(path)  # finished by an earlier pull whose later shard failed
        part = path.with_name(path.name + ".part")
        url = hf_hub_url(self.remote.repo_id, remote_file.name, revision=self.remote.revision)
        failures = 0
        while True:
            have = part.stat().st_size if part.exists() else 0
            if have >= remote_file.size:
                break
            try:
                self.stream_into(client, url, part, have)
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                failures += 1
                if failures > RETRIES:
                    raise DownloadError(
                        f"Download of {remote_file.name} failed after {RETRIES} retries ({exc}). "
                        "Run the same pull again to resume."
                    ) from exc
                log.warning("Connection lost (%s); resuming %s", exc, remote_file.name)
                time.sleep(min(8.0, 0.5 * 2**failures))
        digest = sha256_file(part)
        if remote_file.sha256 and digest != remote_file.sha256:
            part.unlink()
            raise DownloadError(
                f"{remote_file.name} is corrupt: its sha256 is {digest}, the Hub says "
                f"{remote_file.sha256}. The bad copy was deleted; pull again to retry."
            )
        part.replace(path)
        return digest

    def stream_into(self, client: httpx.Client, url: str, part: Path, have: int) -> None:
        headers = dict(self.headers)
        if have:
            headers["Range"] = f"bytes={have}-"
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code in (401, 403):
                raise HubError(
                    f"The Hub refused the download ({response.status_code}): the repo is gated "
                    "or private. Accept its terms on huggingface.co, then `localserve hub login`."
                )
            if response.status_code == 404:
                raise RepoNotFoundError(f"The Hub has no file at {url}.")
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
                    if self.on_progress is not None:
                        self.on_progress(self.progress)
