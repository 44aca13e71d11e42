"""One secret in the system keyring, or in a 0600 file where no keyring backend works.

Used for the admin key, the Hugging Face token and (later) cloud provider keys. On a headless
Linux box there is often no keyring service; the file fallback keeps the product usable there,
and the log says so once per write.

The file, when there is one, is read first: it holds the newest value (a write that reaches the
keyring removes it), and reading it spares the keyring's import and its search for a backend,
about 0.1 s of the daemon's start on a machine without a keyring service. ``keyring`` itself is
imported only when the keyring is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from localserve.errors import KeyStoreError, LocalserveError

log = logging.getLogger(__name__)

KEYRING_SERVICE = "localserve"


def write_private_file(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_private_json(path: Path, error: type[LocalserveError]) -> dict[str, Any]:
    """A JSON object from one of our config files; ``{}`` when the file does not exist yet,
    ``error`` (with the path) when it cannot be read or is not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise error(f"Cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"Cannot read {path}: not a JSON object")
    return data


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    write_private_file(path, json.dumps(data, indent=2) + "\n")


class StoredSecret:
    def __init__(self, keyring_user: str, fallback_file: Path, what: str) -> None:
        self._user = keyring_user
        self._file = fallback_file
        self._what = what  # for messages: "the admin key", "the Hugging Face token"

    def get(self) -> str | None:
        return self._file_value() or self._keyring_value()

    def set(self, value: str) -> None:
        import keyring
        import keyring.errors

        try:
            keyring.set_password(KEYRING_SERVICE, self._user, value)
        except keyring.errors.KeyringError as exc:
            log.warning(
                "No usable keyring backend (%s); storing %s in %s (mode 0600).",
                type(exc).__name__,
                self._what,
                self._file,
            )
            write_private_file(self._file, value + "\n")
        else:
            # A stale fallback file would shadow nothing but confuse people.
            self._file.unlink(missing_ok=True)

    def delete(self) -> bool:
        """Forget the secret; False when there was none."""
        import keyring
        import keyring.errors

        existed = self.get() is not None
        # Not there, or no backend: the file is then the only copy.
        with contextlib.suppress(keyring.errors.KeyringError):
            keyring.delete_password(KEYRING_SERVICE, self._user)
        self._file.unlink(missing_ok=True)
        return existed

    def location(self) -> str:
        import keyring

        if self._file_value() is None and self._keyring_value() is not None:
            return f"system keyring ({type(keyring.get_keyring()).__name__})"
        return str(self._file)

    def _file_value(self) -> str | None:
        try:
            return self._file.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"Cannot read {self._file}: {exc}") from exc

    def _keyring_value(self) -> str | None:
        import keyring
        import keyring.errors

        try:
            value = keyring.get_password(KEYRING_SERVICE, self._user)
        except keyring.errors.KeyringError:
            return None
        return value or None
