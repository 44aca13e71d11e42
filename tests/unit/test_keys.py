"""The key store with a real keyring backend (in memory) and with the file fallback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.backends.null
import pytest

from localserve.paths import app_paths
from localserve.security.keys import KeyStore, hash_key
from localserve.server.auth import KeyVerifier


class MemoryKeyring(keyring.backend.KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.items.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_admin_key_goes_to_the_keyring_when_one_exists(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    paths = app_paths({"LOCALSERVE_HOME": str(tmp_path)}).ensure()
    store = KeyStore(paths)
    key = store.admin_key()
    assert memory_keyring.items[("localserve", "admin-key")] == key
    assert not paths.admin_key_file.exists()
    assert store.admin_key() == key
    assert "keyring" in store.admin_key_location()


def test_admin_key_falls_back_to_a_private_file(tmp_path: Path) -> None:
    paths = app_paths({"LOCALSERVE_HOME": str(tmp_path)}).ensure()
    key = KeyStore(paths).admin_key()
    assert paths.admin_key_file.read_text().strip() == key
    assert paths.admin_key_file.stat().st_mode & 0o777 == 0o600


def test_the_null_keyring_backend_does_not_swallow_the_admin_key(tmp_path: Path) -> None:
    """keyring's null backend accepts every secret and keeps none: the key goes to its file."""
    paths = app_paths({"LOCALSERVE_HOME": str(tmp_path)}).ensure()
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.null.Keyring())
    try:
        store = KeyStore(paths)
        key = store.admin_key()
        assert paths.admin_key_file.read_text().strip() == key
        assert KeyStore(paths).admin_key() == key
    finally:
        keyring.set_keyring(previous)


def test_verifier_sees_changes_without_restart(tmp_path: Path) -> None:
    paths = app_paths({"LOCALSERVE_HOME": str(tmp_path)}).ensure()
    store = KeyStore(paths)
    verifier = KeyVerifier(store)
    admin = store.admin_key()
    principal = verifier.verify(admin)
    assert principal is not None and principal.is_admin
    client = store.add_client_key("aider")
    found = verifier.verify(client)
    assert found is not None and found.name == "aider" and not found.is_admin
    assert hash_key(client) in paths.client_keys_file.read_text()
    store.revoke_client_key("aider")
    assert verifier.verify(client) is None
    new_admin = store.rotate_admin_key()
    assert verifier.verify(admin) is None
    assert verifier.verify(new_admin) is not None
    assert verifier.verify(None) is None
    assert verifier.verify("") is None


class CountingKeyring(MemoryKeyring):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_password(self, service: str, username: str) -> str | None:
        self.reads += 1
        return super().get_password(service, username)


def test_a_fallback_file_is_read_first_and_spares_the_keyring(tmp_path: Path) -> None:
    """The file holds the newest value (a write that reaches the keyring removes it); reading
    it first skips the keyring's backend search at every daemon start."""
    paths = app_paths({"LOCALSERVE_HOME": str(tmp_path)}).ensure()
    previous = keyring.get_keyring()
    backend = CountingKeyring()
    backend.items[("localserve", "admin-key")] = "older, from before the keyring broke"
    keyring.set_keyring(backend)
    try:
        paths.admin_key_file.write_text("newer\n")
        store = KeyStore(paths)
        assert store.admin_key() == "newer"
        assert backend.reads == 0
        assert store.admin_key_location() == str(paths.admin_key_file)
        paths.admin_key_file.unlink()
        assert store.admin_key() == "older, from before the keyring broke"
        assert backend.reads == 1
    finally:
        keyring.set_keyring(previous)


# Run in a child process: this one has imported keyring, and then keyring always decides.
WITHOUT_A_KEYRING_SERVICE = """
import json, os, sys
from localserve.paths import app_paths
from localserve.security.keys import KeyStore
from localserve.security.secret_store import why_no_keyring

paths = app_paths({"LOCALSERVE_HOME": sys.argv[1]}).ensure()
key = KeyStore(paths).admin_key()
runtime, config = sys.argv[2], sys.argv[3]
cases = {
    "bare": {},
    "bus address": {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"},
    "bus socket": {"XDG_RUNTIME_DIR": runtime},
    "runtime dir without a bus": {"XDG_RUNTIME_DIR": config},
    "keyringrc.cfg": {"XDG_CONFIG_HOME": config},
    "fail backend": {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"},
    "null backend": {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"},
    "chosen backend": {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.EncryptedKeyring"},
}
verdicts = {name: why_no_keyring(env) for name, env in cases.items()}
print(json.dumps({
    "key": key,
    "keyring imported": "keyring" in sys.modules,
    "verdicts": verdicts,
}))
"""


def test_without_a_keyring_service_the_key_goes_to_its_file_without_importing_keyring(
    tmp_path: Path,
) -> None:
    """No D-Bus session bus and no backend chosen: keyring's import and backend search (about
    0.2 s of a fresh home's start) are skipped, with the same outcome, the 0600 file."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    with socket.socket(socket.AF_UNIX) as bus:  # a session bus's socket, as dbus-daemon makes
        bus.bind(str(runtime / "bus"))
        config = tmp_path / "config"
        (config / "python_keyring").mkdir(parents=True)
        (config / "python_keyring" / "keyringrc.cfg").write_text("[backend]\n")
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in {"PYTHON_KEYRING_BACKEND", "DBUS_SESSION_BUS_ADDRESS"}
            and not name.startswith("XDG_")
        }
        env["HOME"] = str(tmp_path)  # no keyringrc.cfg under ~/.config
        home = tmp_path / "home"
        answer = subprocess.run(
            [sys.executable, "-c", WITHOUT_A_KEYRING_SERVICE, str(home), str(runtime), str(config)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(answer.stdout)
    assert result["keyring imported"] is False
    key_file = app_paths({"LOCALSERVE_HOME": str(home)}).admin_key_file
    assert key_file.read_text().strip() == result["key"]
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "No usable keyring backend (no D-Bus session bus" in answer.stderr
    verdicts = result["verdicts"]
    assert verdicts["bare"] == "no D-Bus session bus for a keyring service"
    assert verdicts["runtime dir without a bus"] == verdicts["bare"]
    assert (
        verdicts["fail backend"]
        == verdicts["null backend"]
        == ("PYTHON_KEYRING_BACKEND turns it off")
    )
    for usable in ("bus address", "bus socket", "keyringrc.cfg", "chosen backend"):
        assert verdicts[usable] is None, usable
