"""Shared fixtures: every test gets its own LOCALSERVE_HOME; daemons are real subprocesses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.daemon_process import DaemonProcess

# Never touch the developer's real keyring: the fail backend makes the admin key fall back to
# its 0600 file, as on a headless box. Set before keyring picks a backend.
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LOCALSERVE_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("LOCALSERVE_") and name != "LOCALSERVE_HOME":
            monkeypatch.delenv(name)
    return home


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon serving the starter model, shared by the tests of one module."""
    with DaemonProcess(tmp_path_factory.mktemp("daemon-home")) as running:
        running.wait_until_model("ready")
        yield running
