"""Splitting CPU threads between busy runners: the split, and the runner's command channel."""

from __future__ import annotations

import logging

import pytest

from localserve.daemon.pool import split_threads
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
