"""Work on a thread of its own, its result a future."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

ResultT = TypeVar("ResultT")


def in_background(work: Callable[[], ResultT], name: str) -> Future[ResultT]:
    """``work()`` on a daemon thread (an executor's thread would be waited for at exit, and
    this one may be blocked reading stdin)."""
    future: Future[ResultT] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to whoever waits for the result
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
