"""Check a model file's GGUF header in a short-lived child process before a runner loads it.

The header reader (gguf_header.py) is bounded, but a model file is hostile input: reading it
in a child with a time limit and an address-space limit means that a bug in the reader, or in
anything it calls, costs one child process and a clear error, not the daemon. A passing verdict
is kept per file identity (path, size, mtime, inode) and localserve version: in memory, and in a
small JSON file when the caller names one, so neither restarts of a runner nor later launches
of the daemon pay the child's 0.15 s again. A file whose header this process has read whole
already, with the same reader, passes too (``passed_in_process``): a child would only read it
again, and whatever harm the read could do is done. The starter model's record is made so on a
first launch, and its child then stood between that launch and its first answer.

    python -m localserve.hub.gguf_check FILE   # prints {"ok": true} or {"error": "..."}
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from localserve import __version__
from localserve.errors import InvalidModelFileError

CHECK_TIMEOUT_S = 20.0
CHECK_MEMORY_BYTES = 1 << 30  # address space; reading the largest real headers needs ~100 MiB

MEMORY_ENV = "LOCALSERVE_CHECK_MEMORY"
KEPT_VERDICTS = 256  # passing verdicts the file keeps (the newest)

_passed: set[str] = set()
_read_in_process: set[str] = set()  # headers this process read whole itself (passed_in_process)


def _identity(path: Path, stat: os.stat_result) -> str:
    return f"{__version__}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"


def _read_passed(file: Path | None) -> list[str]:
    if file is None:
        return []
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    passed = data.get("passed") if isinstance(data, dict) else None
    return [key for key in passed if isinstance(key, str)] if isinstance(passed, list) else []


def _remember_passed(key: str, file: Path | None) -> None:
    _passed.add(key)
    if file is None:
        return
    from localserve.hub.library import write_json_atomic

    kept = [old for old in _read_passed(file) if old != key][-(KEPT_VERDICTS - 1) :]
    with contextlib.suppress(OSError):  # only a cache: the next launch checks again
        write_json_atomic(file, {"passed": [*kept, key]})


def passed_in_process(path: Path) -> None:
    """Count ``path``'s header as checked: this process has just read it whole with the
    reader the child runs (``describe_file``), and nothing went wrong."""
    with contextlib.suppress(OSError):  # gone already: the check will say so
        _read_in_process.add(_identity(path, path.stat()))


def _limit_own_memory() -> None:
    """In the child: cap its address space (POSIX; set here, not with preexec_fn, which is
    unsafe in the daemon's threaded process)."""
    limit = int(os.environ.get(MEMORY_ENV, CHECK_MEMORY_BYTES))
    if os.name == "posix" and limit > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def check_model_file(
    path: Path,
    timeout: float = CHECK_TIMEOUT_S,
    memory_bytes: int = CHECK_MEMORY_BYTES,
    verdicts_file: Path | None = None,
) -> None:
    """Raise InvalidModelFileError, with the reason, unless ``path`` (and its shards) has a
    sound GGUF header, as judged by a child process held to ``timeout`` and ``memory_bytes``
    (or by an earlier such verdict for the same file, kept in ``verdicts_file``)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise InvalidModelFileError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    key = _identity(path, stat)
    if key in _passed or key in _read_passed(verdicts_file):
        _passed.add(key)
        return
    if key in _read_in_process:
        _remember_passed(key, verdicts_file)  # the verdict a child would give, for later launches
        return
    env = {**os.environ, MEMORY_ENV: str(memory_bytes)}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "localserve.hub.gguf_check", str(path)],
            capture_output=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise InvalidModelFileError(
            f"{path.name}: checking its header took over {timeout:.0f} s; not loading it."
        ) from None
    verdict = _verdict(result.stdout)
    if verdict.get("ok") is True and result.returncode == 0:
        _remember_passed(key, verdicts_file)
        return
    reason = verdict.get("error") or (
        f"the header check ran out of memory or crashed (exit code {result.returncode})"
    )
    raise InvalidModelFileError(str(reason))


def _verdict(output: bytes) -> dict[str, object]:
    lines = output.decode("utf-8", errors="replace").strip().splitlines()
    try:
        verdict = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return verdict if isinstance(verdict, dict) else {}


def main(argv: list[str]) -> int:
    _limit_own_memory()
    from localserve.hub.library import describe_file

    try:
        describe_file(Path(argv[0]))
    except InvalidModelFileError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    except MemoryError:
        print(json.dumps({"error": f"{Path(argv[0]).name}: its header needs too much memory."}))
        return 3
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
