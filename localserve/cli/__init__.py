"""The ``localserve`` command: one module per command group, each parsing its arguments and
calling the core (``main.py`` holds the group, the serving commands and the error handling)."""

from __future__ import annotations

import sys


def main() -> None:
    """The console script. For `serve` it starts the first runner process before importing the
    CLI, so that the two processes' start-ups overlap (``daemon/head_start.py``)."""
    from localserve.daemon.head_start import start_first_runner

    first_runner = start_first_runner(sys.argv[1:])
    from localserve.cli.main import main as cli_main

    cli_main(first_runner)


__all__ = ["main"]
