"""Splitting CPU threads between busy runners: the split, the grants, the wait for them, and the
runner's command channel."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from localserve.daemon import cpu_share
from localserve.daemon.cpu_share import share_threads, split_threads, threads_freed
from localserve.runner.commands import COMMAND_THREADS, ThreadShare, command_line, handle


@pytest.mark.parametrize(
    ("threads", "runners", "expected"),
    [
        (8, 1, [8]),
        (8, 2, [4, 4]),
        (8, 3, [3, 3, 2]),
        (2, 2, [1, 1]),
        (2, 3, [1, 1, 1]),  # never zero, even past the thread count
        (4, 0, []),
    ],
)
def test_threads_are_split_evenly_and_never_to_zero(
    threads: int, runners: int, expected: list[int]
) -> None:
    assert split_threads(threads, runners) == expected


class FakeRunner:
    """A runner's thread grants, as the pool sees them; it applies a grant after ``delay``."""

    def __init__(self, threads: int, delay: float = 0.0) -> None:
        self.threads = threads
        self.delay = delay
        self.waited = False

    def grant_threads(self, threads: int) -> bool:
        fewer = threads < self.threads
        self.threads = threads
        return fewer

    async def threads_applied(self, timeout: float) -> bool:
        self.waited = True
        await asyncio.sleep(min(self.delay, timeout))
        return self.delay <= timeout


def test_busy_runners_are_granted_their_share_and_those_given_fewer_are_named() -> None:
    first, second = FakeRunner(8), FakeRunner(8)
    assert share_threads(8, [first]) == []  # one busy runner keeps every thread
    assert share_threads(8, [first, second]) == [first, second]
    assert (first.threads, second.threads) == (4, 4)
    assert share_threads(8, [second]) == []  # the other went idle: more, not fewer
    assert (first.threads, second.threads) == (4, 8)  # an idle runner keeps its last grant


def test_no_sharing_when_the_pool_has_no_threads_to_split() -> None:
    first, second = FakeRunner(8), FakeRunner(8)
    assert share_threads(0, [first, second]) == []
    assert (first.threads, second.threads) == (8, 8)


def test_a_runner_starting_waits_for_the_others_only() -> None:
    starting, other = FakeRunner(4), FakeRunner(4, delay=0.02)
    began = time.monotonic()
    asyncio.run(threads_freed([starting, other], starting))
    assert other.waited and not starting.waited
    assert time.monotonic() - began >= 0.02


def test_the_wait_for_freed_threads_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_share, "THREADS_FREED_WAIT_S", 0.01)
    stuck = FakeRunner(4, delay=60.0)  # in a long prefill step
    began = time.monotonic()
    asyncio.run(threads_freed([stuck], FakeRunner(4)))
    assert time.monotonic() - began < 1.0


def test_a_threads_command_changes_the_share() -> None:
    share = ThreadShare(8)
    handle(command_line(COMMAND_THREADS, threads=3), share)
    assert share.threads == 3


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"command": "threads"}\n',
        b'{"command": "threads", "threads": 0}\n',
        b'{"command": "threads", "threads": "many"}\n',
        b'{"command": "explode"}\n',
    ],
)
def test_a_bad_command_is_logged_and_changes_nothing(
    line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    share = ThreadShare(8)
    with caplog.at_level(logging.WARNING):
        handle(line, share)
    assert share.threads == 8
    assert "Ignored a command" in caplog.text
