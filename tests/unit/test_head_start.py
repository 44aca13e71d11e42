"""Which commands get a runner started before the CLI is imported (daemon/head_start.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localserve.daemon.head_start import start_first_runner


@pytest.mark.parametrize(
    "argv",
    [[], ["status"], ["models", "list"], ["serve", "--help"], ["serve", "-h"], ["tray"]],
)
def test_only_serve_gets_a_head_start(argv: list[str], isolated_home: Path) -> None:
    assert start_first_runner(argv) is None
    assert not (isolated_home / "logs").exists()


def test_serve_starts_a_runner_waiting_for_its_handshake(isolated_home: Path) -> None:
    runner = start_first_runner(["serve", "--port", "0"])
    assert runner is not None and runner.stdin is not None
    try:
        assert runner.poll() is None
        assert (isolated_home / "logs" / "spare-runner.log").exists()
    finally:
        runner.stdin.close()  # no handshake: end of input, and it exits by itself
        assert runner.wait(60) == 0
        assert runner.stdout is not None
        runner.stdout.close()
