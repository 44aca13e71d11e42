"""The Models window's per-model "Settings…" dialog, on a real daemon the tray starts: it shows
the preset, saves changes to config.toml through the daemon, clears keys, and refuses a bad
value in place without saving."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from localserve.config.settings import read_config_file
from localserve.gui.tray import TrayController
from localserve.gui.windows.model_settings import DEFAULT, ModelSettingsDialog
from localserve.paths import AppPaths, app_paths
from tests.helpers.daemon_process import STARTER_MODEL


@pytest.fixture
def paths(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> AppPaths:
    monkeypatch.setenv("LOCALSERVE_PORT", "0")
    return app_paths().ensure()


def test_the_dialog_saves_clears_and_refuses(
    tray: TrayController, qtbot: QtBot, paths: AppPaths
) -> None:
    dialog = ModelSettingsDialog(tray, STARTER_MODEL)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(dialog.save_button.isEnabled, timeout=10_000)
    assert (
        dialog.lines["ctx"].text() == "" and dialog.choices["cache_type_k"].currentText() == DEFAULT
    )

    dialog.lines["ctx"].setText("2048")
    dialog.lines["temperature"].setText("0.5")
    dialog.lines["stop"].setText("END, STOP")
    dialog.choices["cache_type_k"].setCurrentText("q8_0")
    dialog.system.setPlainText("Be brief.")
    dialog.save()
    qtbot.waitUntil(lambda: dialog.note.text().startswith("Saved"), timeout=10_000)
    assert "reloads" in dialog.note.text()  # ctx and the cache type apply at load
    table = read_config_file(paths.config_file)["models"][STARTER_MODEL]
    assert table == {
        "ctx": 2048,
        "temperature": 0.5,
        "stop": ["END", "STOP"],
        "cache_type_k": "q8_0",
        "system": "Be brief.",
    }

    dialog.lines["temperature"].setText("")  # back to the global setting
    dialog.save()
    qtbot.waitUntil(lambda: "temperature" in dialog.note.text(), timeout=10_000)
    assert "temperature" not in read_config_file(paths.config_file)["models"][STARTER_MODEL]

    before = paths.config_file.read_text()
    dialog.lines["top_p"].setText("7")  # out of range: refused here, nothing sent
    dialog.save()
    assert dialog.note.text().startswith("⚠") and "top_p" in dialog.note.text()
    assert paths.config_file.read_text() == before


def test_the_models_window_opens_the_selected_models_settings(
    tray: TrayController, qtbot: QtBot
) -> None:
    tray.show_models_window()
    models = tray._open_windows["models"]
    qtbot.waitUntil(lambda: models.installed_table.rowCount() > 0, timeout=10_000)
    assert not models.settings_button.isEnabled()
    models.installed_table.selectRow(0)
    assert models.settings_button.isEnabled()
    qtbot.mouseClick(models.settings_button, Qt.MouseButton.LeftButton)
    dialog = models.settings_dialog
    assert isinstance(dialog, ModelSettingsDialog) and dialog.isVisible()
    assert dialog.model == models.installed_table.item(0, 0).text() == STARTER_MODEL
    qtbot.waitUntil(dialog.save_button.isEnabled, timeout=10_000)
    dialog.close()
