"""GUI tests run offscreen: Qt draws into memory, no display needed.

``tray`` is the tray as the app makes it, having launched its own daemon for the test module's
``paths`` and waited until it serves; ``tray_states`` lists every state it went through.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from localserve.gui.tray import TrayController, TrayState
from localserve.paths import AppPaths
from tests.helpers.tray import SERVE_TIMEOUT_MS, started_tray

# Read when pytest-qt makes the QApplication (``qapp``), so setting it after the imports is in time.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def tray_states() -> list[str]:
    return []


@pytest.fixture
def tray(
    qapp: Any, qtbot: QtBot, paths: AppPaths, tray_states: list[str]
) -> Iterator[TrayController]:
    with started_tray(qapp, paths, on_state=tray_states.append) as controller:
        qtbot.waitUntil(lambda: controller.state is TrayState.SERVING, timeout=SERVE_TIMEOUT_MS)
        yield controller
