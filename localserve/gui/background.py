"""Work off the GUI thread: one-off daemon calls on a thread pool, and the live stats stream.

Results come back through ``Dispatcher``, a QObject living on the GUI thread, with a queued
connection: callbacks therefore always run on the GUI thread, whatever thread finished the work.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Qt, Signal, Slot

from localserve.api.control import StatsSnapshot
from localserve.daemon.client import DaemonClient
from localserve.errors import LocalserveError

log = logging.getLogger(__name__)

T = TypeVar("T")
ClientFactory = Callable[[], DaemonClient]


class Dispatcher(QObject):
    """Runs callbacks on the thread this object lives on (the GUI thread).

    Results wait in a plain queue and a no-argument signal wakes the GUI thread to drain it, so
    no Python object crosses threads inside Qt's event system.
    """

    _wake = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._pending: queue.SimpleQueue[tuple[Callable[[Any], None], Any]] = queue.SimpleQueue()
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)

    def deliver(self, callback: Callable[[Any], None], value: Any) -> None:
        """Call ``callback(value)`` soon on the GUI thread. Any thread."""
        self._pending.put((callback, value))
        self._wake.emit()

    @Slot()
    def _drain(self) -> None:
        while True:
            try:
                callback, value = self._pending.get_nowait()
            except queue.Empty:
                return
            callback(value)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, LocalserveError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Background:
    """A few worker threads for calls that may block (network, keyring, files).

    Python threads (not QRunnables): the work is plain Python and needs nothing from Qt.
    """

    def __init__(self, max_threads: int = 4) -> None:
        self.dispatcher = Dispatcher()
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="gui-work")

    def run(
        self,
        work: Callable[[], T],
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Run ``work`` on a worker thread; then ``on_done(result)`` or ``on_error(message)``
        on the GUI thread."""

        def job() -> None:
            try:
                value = work()
            except Exception as exc:
                if on_error is not None:
                    self.dispatcher.deliver(on_error, describe_error(exc))
            else:
                if on_done is not None:
                    self.dispatcher.deliver(on_done, value)

        self._pool.submit(job)


class StatsStream:
    """Follows ``/stats/events`` on a thread, reconnecting, and delivers each snapshot."""

    def __init__(
        self,
        connect: ClientFactory,
        dispatcher: Dispatcher,
        on_snapshot: Callable[[StatsSnapshot], None],
        interval: float = 1.0,
    ) -> None:
        self._connect = connect
        self._dispatcher = dispatcher
        self._on_snapshot = on_snapshot
        self._interval = interval
        self._stop = threading.Event()
        self._client: DaemonClient | None = None
        self._thread = threading.Thread(target=self._run, name="stats-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            client.close()  # ends a blocking read in the stream thread
        self._thread.join(timeout=3)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._client = self._connect()
                for snapshot in self._client.stats_events(self._interval):
                    if self._stop.is_set():
                        return
                    self._dispatcher.deliver(self._on_snapshot, snapshot)
            except Exception as exc:  # not running, restarting, closed: try again shortly
                log.debug("Stats stream interrupted: %s", exc)
            finally:
                if self._client is not None:
                    self._client.close()
                    self._client = None
            self._stop.wait(1.0)
