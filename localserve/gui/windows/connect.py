"""Connect a device: the remote URL and certificate fingerprint, as text and as a QR code.

The QR code holds the URL and the fingerprint only, never a key: the device gets its own key
(`localserve key add NAME`, or "New API key for an app..." in the menu).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import segno
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from localserve.api.control import RemoteStatus
from localserve.gui.icons import icon

if TYPE_CHECKING:
    from localserve.gui.tray import TrayController


def qr_payload(remote: RemoteStatus) -> str:
    return f"{remote.url}\nsha256={remote.fingerprint}"


def qr_pixmap(text: str, scale: int = 6) -> QPixmap:
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="png", scale=scale, border=2)
    pixmap = QPixmap()
    pixmap.loadFromData(buffer.getvalue(), "PNG")
    return pixmap


class ConnectWindow(QWidget):
    def __init__(self, controller: TrayController) -> None:
        super().__init__()
        self.controller = controller
        self.setWindowTitle("localserve: connect a device")
        self.setWindowIcon(icon("localserve"))
        self.qr = QLabel()
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.qr)
        layout.addWidget(self.text)
        self.refresh()

    def refresh(self) -> None:
        status = self.controller.status
        remote = status.remote if status is not None else RemoteStatus(enabled=False)
        if not remote.enabled:
            self.qr.clear()
            self.text.setText("Remote access is off. Turn it on in the tray menu first.")
            return
        self.payload = qr_payload(remote)
        self.qr.setPixmap(qr_pixmap(self.payload))
        self.text.setText(
            f"<b>URL</b>: {remote.url}<br><b>Certificate SHA-256</b>: "
            f"{remote.fingerprint}<br><br>Scan with the device, check that the fingerprint "
            "it shows matches, and give it its own API key (menu: New API key for an app)."
        )
