"""Runner pid files, so a daemon that was killed leaves nothing running behind it.

Each runner gets ``<runtime dir>/runners/<pid>.json`` while it lives (its pid, start time and
model). A runner notices its daemon's death by stdin EOF and exits by itself; these files are
the second line of defence, for a runner that cannot (stuck in native code, or a stdin pipe
inherited elsewhere). A starting daemon stops any runner still listed, checking the start time
and command line so a recycled pid is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import psutil

from localserve.security.secret_store import write_private_file

log = logging.getLogger("localserve.daemon")

RUNNER_MODULE = "localserve.runner"
STOP_GRACE_S = 3.0


def record_runner(folder: Path, pid: int, model_id: str) -> None:
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return  # already gone
    record = {"pid": pid, "started": started, "model": model_id}
    write_private_file(folder / f"{pid}.json", json.dumps(record) + "\n")


def forget_runner(folder: Path, pid: int) -> None:
    (folder / f"{pid}.json").unlink(missing_ok=True)


def _listed_runner(record: dict[str, Any]) -> psutil.Process | None:
    """The live process a pid file describes, or None (gone, or the pid now names another)."""
    try:
        process = psutil.Process(int(record["pid"]))
        same_start = abs(process.create_time() - float(record["started"])) < 1.0
        if same_start and RUNNER_MODULE in process.cmdline():
            return process
    except (psutil.Error, KeyError, TypeError, ValueError):
        pass
    return None


def stop_orphan_runners(folder: Path) -> list[str]:
    """Stop the runners a previous daemon left behind; their descriptions ("model (pid N)")."""
    if not folder.is_dir():
        return []
    stopped: list[tuple[str, psutil.Process]] = []
    for pid_file in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(pid_file.read_text(encoding="utf-8"))
            process = _listed_runner(record) if isinstance(record, dict) else None
            if process is not None:
                with contextlib.suppress(psutil.Error):
                    process.terminate()
                    stopped.append((f"{record.get('model')} (pid {process.pid})", process))
        pid_file.unlink(missing_ok=True)
    _gone, alive = psutil.wait_procs([process for _, process in stopped], timeout=STOP_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    names = [name for name, _ in stopped]
    if names:
        log.warning("Stopped runners left by an earlier daemon: %s", ", ".join(names))
    return names
