"""Byte counts said for people, one way across the app.

Sizes of files, downloads, disks and memory are decimal (kB, MB, GB), as file managers and the
Hugging Face Hub show them, so a model's size here matches the one on its Hub page. A limit set
in powers of two (the 20 MiB image limit) is said in binary units (``binary=True``), so it reads
as the round number it was set to rather than "21.0 MB".
"""

from __future__ import annotations

DECIMAL_UNITS = ("kB", "MB", "GB", "TB")
BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB")


def format_bytes(count: float, *, binary: bool = False) -> str:
    """``count`` bytes in the largest unit that keeps the number under 1000 (1024 if
    ``binary``), with one decimal: ``98.4 MB``, ``20.0 MiB``, ``512 B``."""
    step = 1024 if binary else 1000
    if abs(count) < step:
        return f"{count:.0f} B"
    units = BINARY_UNITS if binary else DECIMAL_UNITS
    for unit in units[:-1]:
        count /= step
        if abs(count) < step:
            return f"{count:.1f} {unit}"
    return f"{count / step:.1f} {units[-1]}"
