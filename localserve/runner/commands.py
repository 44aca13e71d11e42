"""What the daemon tells a running runner, as JSON lines on its stdin after the config line.

- ``threads``: how many CPU threads this runner may use now. The daemon splits its threads
  between the runners that are generating at the same time (``ModelPool._share_cpu``), because
  ggml's worker threads spin while they wait for each other: two runners each using every core
  slow each other down far more than twofold.

Closing stdin still means the daemon is gone (``protocol.py``): the runner exits at once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

from localserve.runner.reporting import EVENT_THREADS, Report

log = logging.getLogger(__name__)

COMMAND_THREADS = "threads"


def command_line(command: str, **fields: object) -> bytes:
    return (json.dumps({"command": command, **fields}) + "\n").encode("utf-8")


class ThreadShare:
    """The thread count the daemon last granted. Written by the stdin reader; each context
    applies it on its own thread before its next decode (``llama_set_n_threads`` must not race
    a decode of the same context), and the batch loop reports it applied (``report``)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.report: Report | None = None

    def grant(self, threads: int) -> None:
        self.threads = threads

    def applied(self, threads: int) -> None:
        if self.report is not None:
            self.report({"event": EVENT_THREADS, "threads": threads})


def handle(line: bytes, share: ThreadShare) -> None:
    """Apply one command line; a line that is not a known command is logged and ignored."""
    try:
        command = json.loads(line)
        if command.get("command") == COMMAND_THREADS:
            threads = int(command["threads"])
            if threads < 1:
                raise ValueError(threads)
            share.grant(threads)
            return
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    log.warning("Ignored a command from the daemon: %.200r", line)


def follow_daemon(lines: Iterable[bytes], share: ThreadShare) -> None:
    """Apply the daemon's commands until stdin closes (the daemon exited or died), then exit
    at once, so that a runner is never orphaned."""
    try:
        for line in lines:
            if line.strip():
                handle(line, share)
    finally:
        os._exit(0)
