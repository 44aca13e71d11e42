"""The first runner process of `localserve serve`, started before the CLI is imported.

Launch to first answer is a race of two Python processes' start-ups: the daemon's (click,
pydantic, the settings, FastAPI: about 0.35 s on a 2-core EPYC) and the runner's (llama.cpp and
its HTTP server, about 0.3 s, then the model). One after the other, they add up. So the console
script starts a runner process first thing for `serve` (``start_first_runner``), and the daemon
takes it as its spare once its event loop runs (``SpareRunner.adopt``): the runner imports on
the other core while the daemon does, then waits on stdin for its handshake.

The daemon's handshake still comes 0.4-0.6 s after the launch, and the model's load takes
about as long again. So when the last launch with the same arguments loaded a first model
whose files are unchanged since, the runner is told at once what that launch's handshake
said (``FirstRunnerMemory``, ``api/anticipation.py``) and loads the model while it waits.
A first launch (no config file, no engine check kept) is told to expect the starter model,
unless its options or the settings' variables say otherwise (``first_launch_guess``).

Should the daemon never get that far (bad arguments, a daemon already running, `--help`), this
process exits, the runner reads end-of-file on stdin and exits too. POSIX only: asyncio takes
over a ``Popen``'s pipes there, not on Windows, where the daemon spawns its first runner itself.

Only standard modules and ``localserve.paths`` are imported here: they are all this costs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import IO, Any

from localserve.api.anticipation import GUESS_FIRST, anticipation_line, first_launch_guess
from localserve.paths import app_paths
from localserve.program import runner_command

SPARE_LOG_NAME = "spare-runner.log"  # a spare runner's log (logs folder) until it has a model
HELP_FLAGS = frozenset({"--help", "-h"})
SUPPORTED = os.name == "posix"
# What a pipe takes without a reader on every POSIX system (macOS: 16 KiB at first): the
# console script must not wait for the runner's imports. A longer guess (a preset's long
# chat template) is not sent.
ANTICIPATION_MAX_BYTES = 16_000


class FirstRunnerMemory:
    """The handshake the daemon sent its first runner (without the token), kept in a file with
    the launch's arguments and each file's size and modification time; recalled by the next
    launch with the same arguments as long as those files are unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def recall(self, args: list[str]) -> bytes | None:
        """The anticipation line for a launch with ``args``, or None."""
        try:
            kept = json.loads(self.path.read_bytes())
            if kept["args"] != args or any(
                _identity(name) != identity for name, identity in kept["files"].items()
            ):
                return None
            line = anticipation_line(kept["handshake"], kept["build"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return line if len(line) <= ANTICIPATION_MAX_BYTES else None

    def remember(
        self, args: list[str], handshake: dict[str, Any], build: str, files: list[str]
    ) -> None:
        from localserve.hub.library import write_json_atomic

        kept = {
            "args": args,
            "handshake": handshake,
            "build": build,
            "files": {name: _identity(name) for name in files},
        }
        try:
            if json.loads(self.path.read_bytes()) == kept:
                return
        except (OSError, ValueError):
            pass
        write_json_atomic(self.path, kept)

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


def _identity(name: str) -> list[int] | None:
    try:
        stat = os.stat(name)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _write_all(pipe: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = pipe.write(view)
        if not written:
            raise BrokenPipeError("the runner's stdin took nothing")
        view = view[written:]


def start_first_runner(argv: list[str]) -> subprocess.Popen[bytes] | None:
    """A runner process for `localserve serve` (``argv`` without the program), or None for
    any other command, on Windows, or when it cannot start (the daemon then spawns one)."""
    if not SUPPORTED or argv[:1] != ["serve"] or HELP_FLAGS.intersection(argv):
        return None
    paths = app_paths()
    guess = FirstRunnerMemory(paths.first_runner_file).recall(argv)
    if guess is None and not (paths.config_file.exists() or paths.engine_checks_file.exists()):
        guess = first_launch_guess(argv[1:], os.environ)
    try:
        log_file = paths.log_dir / SPARE_LOG_NAME
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            runner = subprocess.Popen(
                [*runner_command(), *([GUESS_FIRST] if guess else [])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                bufsize=0,
                start_new_session=True,  # the terminal's Ctrl-C goes to the daemon alone
            )
    except OSError:
        return None
    if guess is not None and runner.stdin is not None:
        with contextlib.suppress(OSError):  # it died: the daemon finds out, starts another
            _write_all(runner.stdin, guess)
    return runner
