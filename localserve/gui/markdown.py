"""Markdown that a model wrote, shown safely in a widget that grows with its text.

The text comes from a model, so it is untrusted: raw HTML in it is shown as text, and the view
loads no resources (an image link to a local file or a URL stays a link). Clicking a link opens
http(s) links in the browser, nothing else.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QByteArray, Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QTextBlockFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import QFrame, QSizePolicy, QTextBrowser, QWidget

FEATURES = (
    QTextDocument.MarkdownFeature.MarkdownDialectGitHub
    | QTextDocument.MarkdownFeature.MarkdownNoHTML
)
CODE_BACKGROUND = QColor("#f1f3f5")


def open_web_link(url: QUrl) -> None:
    if url.scheme() in ("http", "https"):
        QDesktopServices.openUrl(url)


def shade_code_blocks(document: QTextDocument) -> None:
    """Give fenced and indented code blocks a background, so they stand apart from the text
    (Qt's Markdown reader marks them with a fixed-pitch font and the fence, not a colour)."""
    block = document.begin()
    while block.isValid():
        block_format = block.blockFormat()
        fenced = block_format.hasProperty(QTextBlockFormat.Property.BlockCodeFence)
        if fenced or block_format.nonBreakableLines():
            shaded = QTextBlockFormat()
            shaded.setBackground(CODE_BACKGROUND)
            cursor = QTextCursor(block)
            cursor.mergeBlockFormat(shaded)
        block = block.next()


class MarkdownView(QTextBrowser):
    """Read-only Markdown (or plain text) without a scroll bar of its own: its height follows
    its text, so a list of them scrolls as one page."""

    def __init__(self, parent: QWidget | None = None, style: str = "") -> None:
        super().__init__(parent)
        self._source = ""
        self.setStyleSheet(f"QTextBrowser {{ background: transparent; {style} }}")
        self.setOpenLinks(False)
        self.anchorClicked.connect(open_web_link)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.viewport().setAutoFillBackground(False)  # the bubble's colour shows through
        self.document().setUndoRedoEnabled(False)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()

    def set_markdown(self, text: str) -> None:
        self._source = text
        self.document().setMarkdown(text, FEATURES)
        shade_code_blocks(self.document())

    def set_plain(self, text: str) -> None:
        self._source = text
        self.setPlainText(text)

    def source_text(self) -> str:
        """The text as given (the Markdown source, not its rendering)."""
        return self._source

    def loadResource(self, kind: int, name: QUrl | str) -> Any:
        # Never an image or a file named by a model's answer. Empty bytes, not None: for an
        # unanswered name the document would read a local file itself.
        return QByteArray()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self, *_: Any) -> None:
        margins = self.contentsMargins()
        height = math.ceil(self.document().size().height()) + margins.top() + margins.bottom()
        if height != self.height():
            self.setFixedHeight(max(height, 1))
