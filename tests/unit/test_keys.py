"""The key store with a real keyring backend (in memory) and with the file fallback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
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
