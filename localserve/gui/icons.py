"""Tray and window icons, drawn from the SVGs in ``resources/icons``."""

from __future__ import annotations

import functools

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

from localserve.paths import resources_dir

ICON_SIZES = (16, 22, 24, 32, 48, 64)
FALLBACK_COLORS = {"stopped": "#8a8f98", "error": "#ef4444", "busy": "#a855f7"}


@functools.cache
def icon(name: str) -> QIcon:
    """``tray-serving``, ``localserve``...: rendered at the usual tray sizes."""
    path = resources_dir() / "icons" / f"{name}.svg"
    result = QIcon()
    renderer = QSvgRenderer(str(path)) if path.is_file() else None
    for size in ICON_SIZES:
        pixmap = QPixmap(QSize(size, size))
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if renderer is not None and renderer.isValid():
            renderer.render(painter)
        else:  # resources missing (a broken install): a plain dot still tells the state
            state = name.removeprefix("tray-")
            painter.setBrush(QColor(FALLBACK_COLORS.get(state, "#3b82f6")))
            painter.setPen(Qt.PenStyle.NoPen)
            painter.drawEllipse(2, 2, size - 4, size - 4)
        painter.end()
        result.addPixmap(pixmap)
    return result
