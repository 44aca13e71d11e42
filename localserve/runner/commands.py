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
from typing import Any

from localserve.runner.reporting import EVENT_THREADS, Report

log = logging.getLogger(__name__)

COMMAND_THREADS = "threads"


def command_line(command: str, **fields: object) -> bytes:
    return (json.dumps({"command": command, **fields}) + "\n").encode("utf-8")


class ThreadShare:
    """The thread count the daemon last granted. Written by the stdin reader; each context
    applies it on its own thread before its next decode (``llama_set_n_threads`` must not race
    a decode of the same context) and reports it applied (``report``): the daemon waits for
    that before it lets another model start."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.report: Report | None = None

    def grant(self, threads: int) -> None:
        self.threads = threads

    def apply(self, context: Any, in_use: int, name: str) -> int:
        """On the thread that decodes with the llama.cpp ``context``: switch it to the count
        granted last if that is not ``in_use``, and report it. Returns the count now in use."""
        import llama_cpp  # here, not at the top: the daemon imports this module

        threads = self.threads
        if threads != in_use:
            llama_cpp.llama_set_n_threads(context, threads, threads)
            log.info("CPU threads for the %s: %d (was %d)", name, threads, in_use)
            if self.report is not None:
                self.report({"event": EVENT_THREADS, "threads": threads})
        return threads


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
