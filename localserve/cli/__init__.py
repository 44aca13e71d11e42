"""The ``localserve`` command: one module per command group, each parsing its arguments and
calling the core (``main`` holds the group, the serving commands and the error handling)."""

from localserve.cli.main import cli, main

__all__ = ["cli", "main"]
