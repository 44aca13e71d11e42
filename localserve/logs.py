"""Log files: rotating, optionally JSON, and with secrets masked before anything is written.

The daemon logs through ``configure_logging``; each runner's stderr goes to its own file,
rotated by ``rotate_if_large`` before a runner starts (a child's open file cannot be rotated
under it). ``localserve logs`` reads them (``follow`` for ``-f``).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

LOG_MAX_BYTES = 5 * 2**20
LOG_BACKUPS = 3
# Our keys (lsa-/lsk-), Hugging Face tokens, bearer credentials and provider keys (sk-...).
SECRET = re.compile(r"\b(lsa-|lsk-|hf_|sk-)[A-Za-z0-9_\-]{8,}|(?i:bearer\s+)[^\s\"']{8,}")


def mask(text: str) -> str:
    return SECRET.sub(lambda m: m.group(0)[:8] + "…[masked]", text)


class MaskSecrets(logging.Filter):
    """Rewrites each record's message with secrets masked (a key pasted into an error, say)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_file: Path, level: str, json_format: bool = False) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler.setFormatter(JsonFormatter() if json_format else text)
    console = logging.StreamHandler()
    console.setFormatter(text)
    for handler in (file_handler, console):
        handler.addFilter(MaskSecrets())
    logging.basicConfig(level=level.upper(), handlers=[file_handler, console], force=True)
    # One line per relayed request would drown the log; errors are logged where they happen.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def rotate_if_large(path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS) -> None:
    """Shift ``path`` to ``path.1`` (and older ones along) once it is over ``max_bytes``."""
    try:
        if path.stat().st_size <= max_bytes:
            return
    except OSError:
        return
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file (reading at most its last few megabytes)."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 4 * 2**20))
        text = handle.read().decode("utf-8", "replace")
    return text.splitlines()[-lines:] if lines > 0 else []


def follow(path: Path, poll: float = 0.25) -> Iterator[str]:
    """Lines appended to ``path`` from now on, across rotation, until interrupted."""
    handle = path.open("rb")
    handle.seek(0, 2)
    pending = b""
    try:
        while True:
            chunk = handle.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", "replace")
                continue
            try:
                rotated = path.stat().st_ino != os.fstat(handle.fileno()).st_ino
            except OSError:
                rotated = False
            if rotated or (path.exists() and path.stat().st_size < handle.tell()):
                handle.close()
                handle = path.open("rb")
            time.sleep(poll)
    finally:
        handle.close()
