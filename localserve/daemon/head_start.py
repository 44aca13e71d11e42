"""The first runner process of `localserve serve`, started before the CLI is imported.

Launch to first answer is a race of two Python processes' start-ups: the daemon's (click,
pydantic, the settings, FastAPI: about 0.35 s on a 2-core EPYC) and the runner's (llama.cpp and
its HTTP server, about 0.3 s, then the model). One after the other, they add up. So the console
script starts a runner process first thing for `serve` (``start_first_runner``), and the daemon
takes it as its spare once its event loop runs (``SpareRunner.adopt``): the runner imports on
the other core while the daemon does, then waits on stdin for its handshake.

Should the daemon never get that far (bad arguments, a daemon already running, `--help`), this
process exits, the runner reads end-of-file on stdin and exits too. POSIX only: asyncio takes
over a ``Popen``'s pipes there, not on Windows, where the daemon spawns its first runner itself.

Only standard modules and ``localserve.paths`` are imported here: they are all this costs.
"""

from __future__ import annotations

import os
import subprocess

from localserve.paths import app_paths
from localserve.program import runner_command

SPARE_LOG_NAME = "spare-runner.log"  # a spare runner's log (logs folder) until it has a model
HELP_FLAGS = frozenset({"--help", "-h"})


def start_first_runner(argv: list[str]) -> subprocess.Popen[bytes] | None:
    """A runner process for `localserve serve` (``argv`` without the program), or None for
    any other command, on Windows, or when it cannot start (the daemon then spawns one)."""
    if os.name != "posix" or argv[:1] != ["serve"] or HELP_FLAGS.intersection(argv):
        return None
    try:
        log_file = app_paths().log_dir / SPARE_LOG_NAME
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            return subprocess.Popen(
                runner_command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                bufsize=0,
                start_new_session=True,  # the terminal's Ctrl-C goes to the daemon alone
            )
    except OSError:
        return None
