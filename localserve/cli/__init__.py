"""The ``localserve`` command: one module per command group, each parsing its arguments and
calling the core (``main.py`` holds the group, the serving commands and the error handling)."""

from __future__ import annotations

import sys


def main() -> None:
    """The console script. For `serve` it starts the first runner process before importing the
    CLI, so that the two processes' start-ups overlap (``daemon/head_start.py``), and imports
    without the cyclic garbage collector until the daemon listens."""
    from localserve.program import lean_start_environment, pause_garbage_collection

    lean_start_environment()
    from localserve.daemon.head_start import start_first_runner

    if sys.argv[1:2] == ["serve"]:
        pause_garbage_collection()  # resumed by the daemon once it listens

    first_runner = start_first_runner(sys.argv[1:])
    from localserve.cli.main import main as cli_main

    cli_main(first_runner)


__all__ = ["main"]
