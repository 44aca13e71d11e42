"""Who is calling: API keys from ``Authorization: Bearer`` or ``x-api-key``, compared in
constant time."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from starlette.datastructures import Headers

from localserve.security.keys import KeyStore, hash_key

ADMIN_PRINCIPAL = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    is_admin: bool


def presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


class KeyVerifier:
    """Checks presented keys against the admin key and the client-key hashes.

    Rotations and revocations made by the CLI take effect on the next request: ``keys.json`` is
    re-read whenever its modification stamp changes (one ``stat`` per request).
    """

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._admin_key = store.admin_key().encode("utf-8")
        self._stamp: tuple[int, int] | None = None
        self._generation = 0
        self._client_hashes: list[tuple[str, bytes]] = []
        self._refresh()

    def verify(self, key: str | None) -> Principal | None:
        if key is None:
            return None
        self._refresh()
        encoded = key.encode("utf-8")
        if secrets.compare_digest(encoded, self._admin_key):
            return Principal(ADMIN_PRINCIPAL, is_admin=True)
        digest = hash_key(key).encode("ascii")
        match = None
        for name, stored in self._client_hashes:
            if secrets.compare_digest(digest, stored):
                match = name
        return Principal(match, is_admin=False) if match else None

    def _refresh(self) -> None:
        try:
            stat = self._store.keys_file.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        snapshot = self._store.snapshot()
        if snapshot.admin_generation != self._generation:
            self._admin_key = self._store.admin_key().encode("utf-8")
            self._generation = snapshot.admin_generation
        self._client_hashes = [(k.name, k.key_hash.encode("ascii")) for k in snapshot.client_keys]
        self._stamp = stamp
