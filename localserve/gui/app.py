"""``localserve tray``: one tray app per user; a second launch asks the first to show itself."""

from __future__ import annotations

import hashlib
import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QApplication

from localserve.gui.background import Background
from localserve.gui.icons import icon
from localserve.gui.tray import TrayController
from localserve.paths import AppPaths

ACTIVATE = b"activate\n"


def instance_name(paths: AppPaths) -> str:
    """A local-socket name unique to this user and install (``LOCALSERVE_HOME``)."""
    digest = hashlib.sha256(str(paths.runtime_dir).encode()).hexdigest()[:16]
    return f"localserve-tray-{digest}"


def notify_running_instance(name: str, timeout_ms: int = 1000) -> bool:
    """Tell a tray already running to show itself; False when there is none."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(ACTIVATE)
    socket.waitForBytesWritten(timeout_ms)
    socket.disconnectFromServer()
    return True


class SingleInstance(QObject):
    """Owns the local socket; emits ``activated`` when another launch knocks."""

    activated = Signal()

    def __init__(self, name: str) -> None:
        super().__init__()
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not self.server.listen(name):
            # A stale socket from a crashed tray: nobody answered notify_running_instance.
            QLocalServer.removeServer(name)
            self.server.listen(name)
        self.server.newConnection.connect(self._on_connection)

    def _on_connection(self) -> None:
        while (socket := self.server.nextPendingConnection()) is not None:
            socket.readyRead.connect(lambda s=socket: self._read(s))

    def _read(self, socket: QLocalSocket) -> None:
        if bytes(socket.readAll().data()).startswith(ACTIVATE.strip()):
            self.activated.emit()
        socket.disconnectFromServer()


def create_tray(
    app: QApplication, paths: AppPaths, poll_interval: float = 1.0, stats_interval: float = 1.0
) -> tuple[TrayController, SingleInstance] | None:
    """The tray for ``paths``, or None when one already runs (it was asked to show itself)."""
    name = instance_name(paths)
    if notify_running_instance(name):
        return None
    instance = SingleInstance(name)
    controller = TrayController(paths, Background(), poll_interval, stats_interval)
    instance.activated.connect(controller.show_dashboard)
    return controller, instance


def run_tray(paths: AppPaths) -> int:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv)
    app.setApplicationName("localserve")
    app.setWindowIcon(icon("localserve"))
    app.setQuitOnLastWindowClosed(False)  # closing a window never stops the tray
    created = create_tray(app, paths)
    if created is None:
        print("localserve is already running in the tray; showing it.", file=sys.stderr)
        return 0
    controller, _instance = created
    controller.start()
    code = app.exec()
    controller.shutdown()
    return int(code)
