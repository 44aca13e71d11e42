"""A keyring backend for tests that, like a system keyring, keeps no secret in plain text.

Tests normally run with keyring's fail backend, so secrets fall back to 0600 files, in plain
text by design. A test that proves a secret went to the keyring, and nowhere else, needs a
keyring shared by the test process and the daemon it starts: select this one with
``PYTHON_KEYRING_BACKEND=tests.helpers.fake_keyring.ScrambledFileKeyring`` and point
``FAKE_KEYRING_FILE`` at a file. Values are XOR-scrambled and hex-encoded there, so a search
for a secret's bytes finds nothing, as it would find nothing in an encrypted keyring.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

FILE_ENV = "FAKE_KEYRING_FILE"
PAD = b"localserve-test-keyring"


def scramble(data: bytes) -> bytes:
    return bytes(byte ^ PAD[index % len(PAD)] for index, byte in enumerate(data))


class ScrambledFileKeyring(KeyringBackend):
    priority = 1

    @property
    def file(self) -> Path:
        return Path(os.environ[FILE_ENV])

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def _write(self, entries: dict[str, str]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".keyring.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle)
        os.replace(tmp, self.file)

    @staticmethod
    def _entry(service: str, username: str) -> str:
        return f"{service}\n{username}"

    def get_password(self, service: str, username: str) -> str | None:
        stored = self._read().get(self._entry(service, username))
        return None if stored is None else scramble(bytes.fromhex(stored)).decode()

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._read()
        entries[self._entry(service, username)] = scramble(password.encode()).hex()
        self._write(entries)

    def delete_password(self, service: str, username: str) -> None:
        entries = self._read()
        if entries.pop(self._entry(service, username), None) is None:
            raise PasswordDeleteError("no such password")
        self._write(entries)
