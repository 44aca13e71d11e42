"""Log files: secrets masked, JSON on request, rotation, and ``localserve logs``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from localserve.logs import configure_logging, mask, rotate_if_large, tail

KEY = "lsk-" + "A1b2C3d4E5f6G7h8I9j0" * 2
TOKEN = "hf_" + "x" * 30


def test_secrets_are_masked() -> None:
    line = f"key {KEY} token {TOKEN} header Authorization: Bearer abcdefghijklmnop sk-proj12345678"
    masked = mask(line)
    for secret in (KEY, TOKEN, "abcdefghijklmnop", "sk-proj12345678"):
        assert secret not in masked
    assert masked.count("[masked]") == 4
    assert mask("plain words, a short lsk-x and 12345") == "plain words, a short lsk-x and 12345"


def test_the_log_file_masks_and_can_be_json(tmp_path: Path) -> None:
    log_file = tmp_path / "daemon.log"
    try:
        configure_logging(log_file, "info", json_format=True)
        logging.getLogger("localserve.test").warning("client sent %s", KEY)
        for handler in logging.getLogger().handlers:
            handler.flush()
        entry = json.loads(log_file.read_text().strip().splitlines()[-1])
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    assert entry["level"] == "WARNING" and entry["logger"] == "localserve.test"
    assert KEY not in entry["message"] and "[masked]" in entry["message"]


def test_rotation_keeps_a_few_old_files(tmp_path: Path) -> None:
    log = tmp_path / "runner-x.log"
    for round_ in range(5):
        log.write_text(f"round {round_}\n" + "x" * 100)
        rotate_if_large(log, max_bytes=50, backups=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["runner-x.log.1", "runner-x.log.2", "runner-x.log.3"]
    assert (tmp_path / "runner-x.log.1").read_text().startswith("round 4")
    assert (tmp_path / "runner-x.log.3").read_text().startswith("round 2")


def test_logs_command(tmp_path: Path, isolated_home: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "localserve", "logs", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    missing = run("some-model")
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error: No log at ") and "Traceback" not in missing.stderr
    log_dir = isolated_home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "daemon.log").write_text("".join(f"line {n}\n" for n in range(100)))
    shown = run("-n", "3")
    assert shown.returncode == 0 and shown.stdout.splitlines() == ["line 97", "line 98", "line 99"]
    assert tail(log_dir / "daemon.log", 1) == ["line 99"]
