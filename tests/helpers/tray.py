"""The tray as the app makes it (``create_tray``), polling fast, for the GUI tests.

``started_tray`` starts one and closes it after; the ``tray`` fixture (tests/gui/conftest.py)
is one that launched its own daemon and waited until it serves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from PySide6.QtWidgets import QApplication

from localserve.daemon.launcher import stop_daemon
from localserve.gui.app import create_tray
from localserve.gui.tray import TrayController
from localserve.paths import AppPaths

SERVE_TIMEOUT_MS = 90_000  # a daemon launched by the tray, its starter model loaded


@contextlib.contextmanager
def started_tray(
    qapp: QApplication,
    paths: AppPaths,
    *,
    launch_daemon: bool = True,
    on_state: Callable[[str], None] | None = None,
) -> Iterator[TrayController]:
    """A tray for ``paths``, started. It launches a daemon unless ``launch_daemon`` is False
    (it then follows the one already running, and leaves it running); ``on_state`` hears every
    state from the first. Afterwards the tray is shut down, and the daemon it launched (or a
    test started through it) is stopped."""
    created = create_tray(qapp, paths, poll_interval=0.25, stats_interval=0.25)
    assert created is not None, f"a tray already runs for {paths.data_dir}"
    controller, instance = created
    if on_state is not None:
        controller.state_changed.connect(on_state)
    controller.start(launch_daemon)
    try:
        yield controller
    finally:
        controller.shutdown()
        instance.server.close()
        if launch_daemon:
            stop_daemon(paths)
