"""CPU-thread sharing: the cores split between the runners answering requests right now.

ggml's worker threads spin while they wait for each other, so runners whose threads add up to
more than the cores slow each other down many times over, not twofold. So every runner with a
request in flight gets its part of the threads, granted whenever a runner becomes busy or idle.
An idle runner keeps its last grant until it is busy again (it spends no CPU meanwhile). A
runner becoming busy first waits, up to ``THREADS_FREED_WAIT_S``, for those given fewer threads
to use their smaller share: a step run while two runners hold the same cores takes seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, TypeVar

# One decode step; a long prefill step may take longer, and then the new runner starts anyway.
THREADS_FREED_WAIT_S = 1.0


class ThreadUser(Protocol):
    """A runner as thread sharing sees it (the daemon's ``Supervisor``)."""

    def grant_threads(self, threads: int) -> bool:
        """Allow ``threads`` from now on; True when that is fewer than before."""
        ...

    async def threads_applied(self, timeout: float) -> bool: ...


UserT = TypeVar("UserT", bound=ThreadUser)


def split_threads(threads: int, runners: int) -> list[int]:
    """``threads`` split as evenly as possible between ``runners``, at least one each."""
    base, extra = divmod(threads, runners) if runners else (0, 0)
    return [max(1, base + (index < extra)) for index in range(runners)]


def share_threads(threads: int, busy: Sequence[UserT]) -> list[UserT]:
    """Grant each busy runner its part of ``threads`` (0: no sharing); those given fewer."""
    if threads <= 0:
        return []
    shares = split_threads(threads, len(busy))
    return [
        runner for runner, share in zip(busy, shares, strict=True) if runner.grant_threads(share)
    ]


async def threads_freed(slowed: Sequence[ThreadUser], starting: ThreadUser) -> None:
    """Return once the runners given fewer threads (other than ``starting``) use them, or after
    ``THREADS_FREED_WAIT_S``."""
    others = [runner for runner in slowed if runner is not starting]
    await asyncio.gather(*(runner.threads_applied(THREADS_FREED_WAIT_S) for runner in others))
