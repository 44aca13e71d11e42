"""Entry point of the packaged app (PyInstaller), where there is no ``python -m``.

The daemon starts its helpers as ``<python> -m MODULE``: ``localserve.runner``,
``localserve.hub.gguf_check`` and ``localserve.runner.engine_check``. In the bundle
``sys.executable`` is the app itself, so it accepts that same ``-m MODULE`` form for those
modules (and only those), and is the CLI otherwise: no arguments open the tray, ``serve``,
``models``... work as with pip.
"""

from __future__ import annotations

import runpy
import sys

HELPER_MODULES = frozenset(
    {"localserve.runner", "localserve.hub.gguf_check", "localserve.runner.engine_check"}
)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "-m" and sys.argv[2] in HELPER_MODULES:
        module = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    from localserve.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
