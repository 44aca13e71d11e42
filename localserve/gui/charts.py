"""A small line chart for the dashboard, painted with QPainter (no QtCharts dependency:
PySide6-Essentials lacks it, and a time series with a current value is all we draw)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

WINDOW_S = 300.0


class LineChart(QWidget):
    def __init__(
        self,
        title: str,
        color: str,
        format_value: Callable[[float], str],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.title = title
        self._color = QColor(color)
        self._format = format_value
        self._points: deque[tuple[float, float]] = deque()
        self.placeholder: str | None = None  # shown instead of the chart (nothing to measure)
        self.setMinimumSize(260, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def add(self, at: float, value: float) -> None:
        self._points.append((at, value))
        cutoff = time.time() - WINDOW_S
        while self._points and self._points[0][0] < cutoff:
            self._points.popleft()
        self.update()

    def latest(self) -> float | None:
        return self._points[-1][1] if self._points else None

    def paintEvent(self, event: object) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        area = QRectF(self.rect()).adjusted(8, 26, -8, -8)
        painter.fillRect(self.rect(), palette.base())
        painter.setPen(QPen(palette.mid().color(), 1))
        painter.drawRect(area)
        title_font = QFont(self.font())
        title_font.setBold(True)
        painter.setFont(title_font)
        painter.setPen(palette.text().color())
        latest = self.latest()
        current = self._format(latest) if latest is not None and not self.placeholder else "-"
        painter.drawText(QRectF(8, 4, area.width(), 20), Qt.AlignmentFlag.AlignLeft, self.title)
        painter.drawText(QRectF(8, 4, area.width(), 20), Qt.AlignmentFlag.AlignRight, current)
        if self.placeholder:
            painter.setFont(self.font())
            painter.setPen(palette.mid().color())
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, self.placeholder)
            painter.end()
            return
        if len(self._points) < 2:
            painter.end()
            return
        now = time.time()
        highest = max(value for _, value in self._points)
        peak = highest or 1.0
        painter.setFont(self.font())
        painter.setPen(palette.mid().color())
        painter.drawText(
            area.adjusted(4, 2, -4, -2),
            Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft,
            f"max {self._format(highest)}",
        )
        path = QPainterPath()
        for index, (at, value) in enumerate(self._points):
            x = area.right() - (now - at) / WINDOW_S * area.width()
            y = area.bottom() - value / (peak * 1.1) * area.height()
            point = QPointF(max(area.left(), x), y)
            if index == 0:
                path.moveTo(point)
            else:
                path.lineTo(point)
        painter.setPen(QPen(self._color, 2))
        painter.drawPath(path)
        painter.end()
