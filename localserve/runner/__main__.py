"""Entry point of a runner child process (`python -m localserve.runner`), run by the supervisor.

Start-up is ordered for launch to first answer: only what must come first is imported here.
llama-cpp-python's C binding comes first, without the package's high-level ``Llama``
(``llama_backends.import_binding_alone``). A first runner told what its handshake will most
likely say (``GUESS_FIRST``) starts loading that model right after (``anticipation.py``),
before pydantic, asyncio and the engine (about 0.3 s more); any other starts loading once its
handshake comes, on a thread of its own, while the main thread imports them (``run.py``).
"""

from __future__ import annotations

import logging
import os
import sys

from localserve.api.anticipation import GUESS_FIRST
from localserve.program import lean_start_environment, pause_garbage_collection


def main() -> int:
    pause_garbage_collection()  # for the imports; resumed once serving
    lean_start_environment()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s runner %(levelname)s %(message)s"
    )
    from localserve.runner.llama_backends import import_binding_alone

    import_binding_alone()
    ahead = None
    if GUESS_FIRST in sys.argv[1:]:
        from localserve.runner.anticipation import start_ahead

        ahead = start_ahead(sys.stdin.buffer.readline())
    from localserve.runner.run import run

    return run(ahead)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the stdin watcher thread is blocked in a read, and finalizing
    # around it aborts the process; nothing is left to clean up at this point.
    os._exit(code)
