"""Byte counts said for people: decimal for sizes, binary for limits set in powers of two."""

from __future__ import annotations

import pytest

from localserve.units import format_bytes


@pytest.mark.parametrize(
    ("count", "binary", "said"),
    [
        (0, False, "0 B"),
        (999, False, "999 B"),
        (1000, False, "1.0 kB"),
        (98_400_000, False, "98.4 MB"),
        (4_070_000_000, False, "4.1 GB"),
        (2.5e15, False, "2500.0 TB"),  # the largest unit holds whatever is left
        (1023, True, "1023 B"),
        (100_000, True, "97.7 KiB"),
        (20 * 2**20, True, "20.0 MiB"),  # the image limit reads as set, not as "21.0 MB"
        (3 * 2**30, True, "3.0 GiB"),
        (512.4, False, "512 B"),  # rates are floats
    ],
)
def test_format_bytes(count: float, binary: bool, said: str) -> None:
    assert format_bytes(count, binary=binary) == said
