"""API keys: one admin key (tray, CLI, and any client) and named, revocable client keys.

The admin key lives in the system keyring; where no keyring backend works (a headless Linux box)
it falls back to a 0600 file in the config dir and says so in the log. Client keys are stored
only as SHA-256 hashes: they are 256-bit random tokens, so a fast hash is enough and a leaked
file reveals nothing usable.

``keys.json`` also carries an ``admin_generation`` counter that ``rotate`` bumps, so a running
daemon notices a rotation from the CLI by checking one file's mtime instead of polling the keyring.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localserve.errors import KeyStoreError
from localserve.paths import AppPaths
from localserve.security.secret_store import (
    StoredSecret,
    read_private_json,
    write_private_json,
)

log = logging.getLogger(__name__)

KEYRING_ADMIN_USER = "admin-key"
ADMIN_KEY_PREFIX = "lsa-"
CLIENT_KEY_PREFIX = "lsk-"
KEY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ClientKey:
    name: str
    key_hash: str
    hint: str  # the first characters, so a user can tell keys apart in `key list`
    created_at: float


@dataclass(frozen=True)
class KeySnapshot:
    admin_generation: int
    client_keys: list[ClientKey]


class KeyStore:
    """Reads and writes the admin key and the client-key records for one install."""

    def __init__(self, paths: AppPaths) -> None:
        self._paths = paths
        self._admin = StoredSecret(KEYRING_ADMIN_USER, paths.admin_key_file, "the admin key")

    # -- admin key --------------------------------------------------------------------------
    def admin_key(self) -> str:
        """The admin key, created on first use."""
        key = self._admin.get()
        if key is None:
            key = new_key(ADMIN_KEY_PREFIX)
            self._admin.set(key)
        return key

    def rotate_admin_key(self) -> str:
        key = new_key(ADMIN_KEY_PREFIX)
        self._admin.set(key)
        data = self._load()
        data["admin_generation"] = int(data.get("admin_generation", 0)) + 1
        self._save(data)
        return key

    def admin_key_location(self) -> str:
        return self._admin.location()

    # -- client keys ------------------------------------------------------------------------
    def client_keys(self) -> list[ClientKey]:
        return self.snapshot().client_keys

    def snapshot(self) -> KeySnapshot:
        """The client keys and admin-key generation, read together from ``keys.json``."""
        data = self._load()
        return KeySnapshot(
            admin_generation=int(data.get("admin_generation", 0)),
            client_keys=[ClientKey(**record) for record in data.get("client_keys", [])],
        )

    def add_client_key(self, name: str) -> str:
        """Create a client key called ``name`` and return it; only its hash is kept."""
        if not KEY_NAME_PATTERN.match(name):
            raise KeyStoreError(
                f"Invalid key name '{name}': use 1-64 letters, digits, '.', '_' or '-'."
            )
        data = self._load()
        records = data.setdefault("client_keys", [])
        if any(record["name"] == name for record in records):
            raise KeyStoreError(f"A client key named '{name}' already exists.")
        key = new_key(CLIENT_KEY_PREFIX)
        record = ClientKey(name, hash_key(key), key[: len(CLIENT_KEY_PREFIX) + 4], time.time())
        records.append(asdict(record))
        self._save(data)
        return key

    def revoke_client_key(self, name: str) -> None:
        data = self._load()
        records = data.get("client_keys", [])
        remaining = [record for record in records if record["name"] != name]
        if len(remaining) == len(records):
            raise KeyStoreError(f"No client key named '{name}'.")
        data["client_keys"] = remaining
        self._save(data)

    # -- file -------------------------------------------------------------------------------
    @property
    def keys_file(self) -> Path:
        return self._paths.client_keys_file

    def _load(self) -> dict[str, Any]:
        return read_private_json(self.keys_file, KeyStoreError)

    def _save(self, data: dict[str, Any]) -> None:
        write_private_json(self.keys_file, data)
