"""Render the app icon (resources/icons/localserve.svg) into the sizes each OS wants.

    python packaging/make_icons.py

writes resources/icons/hicolor/<N>x<N>/apps/io.github.localserve.LocalServe.png (committed:
the Linux menu entry uses them) and build/icons/localserve.ico and .icns (made at package
time for the Windows and macOS builds). Uses Qt's SVG renderer, so no extra tools.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QGuiApplication, QImage, QImageWriter, QPainter
from PySide6.QtSvg import QSvgRenderer

ROOT = Path(__file__).resolve().parents[1]
APP_ID = "io.github.localserve.LocalServe"
SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)


def render(renderer: QSvgRenderer, size: int) -> QImage:
    image = QImage(QSize(size, size), QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def shows(path: Path, image: QImage, tolerance: int = 2) -> bool:
    """Whether the PNG at ``path`` already shows ``image``. Qt's antialiasing rounds a level or
    two differently from one CPU to another, and the committed PNGs should change only when
    the SVG does (``make package``, run by the tests, renders them again)."""
    existing = QImage(str(path))
    if existing.isNull() or existing.size() != image.size():
        return False
    ours = image.convertToFormat(QImage.Format.Format_ARGB32).constBits().tobytes()
    theirs = existing.convertToFormat(QImage.Format.Format_ARGB32).constBits().tobytes()
    return len(ours) == len(theirs) and all(
        abs(a - b) <= tolerance for a, b in zip(ours, theirs, strict=True)
    )


def main() -> int:
    QGuiApplication(sys.argv)
    renderer = QSvgRenderer(str(ROOT / "resources" / "icons" / "localserve.svg"))
    if not renderer.isValid():
        print("cannot read resources/icons/localserve.svg", file=sys.stderr)
        return 1
    for size in SIZES:
        target = ROOT / "resources" / "icons" / "hicolor" / f"{size}x{size}" / "apps"
        target.mkdir(parents=True, exist_ok=True)
        image = render(renderer, size)
        if not shows(target / f"{APP_ID}.png", image):
            image.save(str(target / f"{APP_ID}.png"))
    build = ROOT / "build" / "icons"
    build.mkdir(parents=True, exist_ok=True)
    for suffix, size in (("ico", 256), ("icns", 512)):
        writer = QImageWriter(str(build / f"localserve.{suffix}"), suffix.encode())
        if not writer.write(render(renderer, size)):
            print(f"could not write .{suffix}: {writer.errorString()}", file=sys.stderr)
            return 1
    print(f"icons written: {len(SIZES)} PNG sizes, build/icons/localserve.ico and .icns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
