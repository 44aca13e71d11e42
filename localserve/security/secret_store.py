"""One secret in the system keyring, or in a 0600 file where no keyring backend works.

Used for the admin key, the Hugging Face token and (later) cloud provider keys. On a headless
Linux box there is often no keyring service; the file fallback keeps the product usable there,
and the log says so once per write.

The file, when there is one, is read first: it holds the newest value (a write that reaches the
keyring removes it), and reading it spares the keyring's import and its search for a backend,
about 0.1 s of the daemon's start on a machine without a keyring service. ``keyring`` itself is
imported only when the keyring is used, and not at all where no backend could work
(``why_no_keyring``): its import and search cost a fresh home's first start about 0.2 s of CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
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


KEYRING_BACKEND_ENV = "PYTHON_KEYRING_BACKEND"
# Backends a user names to turn the keyring off: ``fail`` raises, ``null`` stores nothing.
NO_KEYRING_BACKENDS = frozenset({"keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"})


def why_no_keyring(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why no keyring backend can work here, known without importing ``keyring``; None when
    one may.

    On Linux and the BSDs every keyring service keyring finds by itself (Secret Service,
    KWallet, libsecret) is reached over the D-Bus session bus: with no bus address in the
    environment and no socket at ``$XDG_RUNTIME_DIR/bus``, none is there. The user's own choice
    wins: a backend named in ``PYTHON_KEYRING_BACKEND`` (``fail`` and ``null`` turn the keyring
    off) or a ``keyringrc.cfg``. Where ``keyring`` is already imported (the tray, a test that
    set a backend) there is no import to spare, and keyring decides. macOS and Windows always
    have their system store. One case this misses: a third-party backend that needs no bus
    (``keyrings.alt``'s files), installed but not configured; the secret then goes to our 0600
    file instead of that backend's file.
    """
    if "keyring" in sys.modules or sys.platform in ("darwin", "win32"):
        return None
    chosen = environ.get(KEYRING_BACKEND_ENV, "").strip()
    if chosen:
        return f"{KEYRING_BACKEND_ENV} turns it off" if chosen in NO_KEYRING_BACKENDS else None
    if environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return None
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and Path(runtime_dir, "bus").exists():
        return None
    config_home = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    if Path(config_home, "python_keyring", "keyringrc.cfg").exists():
        return None
    return "no D-Bus session bus for a keyring service"


class StoredSecret:
    def __init__(self, keyring_user: str, fallback_file: Path, what: str) -> None:
        self._user = keyring_user
        self._file = fallback_file
        self._what = what  # for messages: "the admin key", "the Hugging Face token"

    def get(self) -> str | None:
        return self._file_value() or self._keyring_value()

    def set(self, value: str) -> None:
        no_keyring = why_no_keyring()
        if no_keyring is not None:
            self._fall_back(value, no_keyring)
            return
        import keyring
        import keyring.backends.null
        import keyring.errors

        if isinstance(keyring.get_keyring(), keyring.backends.null.Keyring):
            self._fall_back(value, "the null backend stores nothing")
            return
        try:
            keyring.set_password(KEYRING_SERVICE, self._user, value)
        except keyring.errors.KeyringError as exc:
            self._fall_back(value, type(exc).__name__)
        else:
            # A stale fallback file would shadow nothing but confuse people.
            self._file.unlink(missing_ok=True)

    def _fall_back(self, value: str, why: str) -> None:
        log.warning(
            "No usable keyring backend (%s); storing %s in %s (mode 0600).",
            why,
            self._what,
            self._file,
        )
        write_private_file(self._file, value + "\n")

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
        if self._file_value() is None and self._keyring_value() is not None:
            import keyring

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
        if why_no_keyring() is not None:
            return None
        import keyring
        import keyring.errors

        try:
            value = keyring.get_password(KEYRING_SERVICE, self._user)
        except keyring.errors.KeyringError:
            return None
        return value or None
