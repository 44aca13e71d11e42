"""The tray app against a real daemon it starts itself (pytest-qt, offscreen Qt).

The Hub is tests/helpers/fake_hub.py; everything else is real: the daemon subprocess, runners, the
control API, the stats stream.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
from openai import OpenAI
from pytestqt.qtbot import QtBot

from localserve.api.control import HubQuant
from localserve.daemon.state import read_state
from localserve.gui.tray import TrayController, TrayState
from localserve.hub.library import Library
from localserve.paths import AppPaths, app_paths
from localserve.security.keys import KeyStore
from tests.helpers.daemon_process import STARTER_MODEL
from tests.helpers.fake_hub import FakeHub
from tests.helpers.model_files import starter_path
from tests.helpers.tray import SERVE_TIMEOUT_MS, started_tray

REPO = "example/Traypull-GGUF"
FILE = "Traypull-Q4_1.gguf"
MODEL = "traypull-q4_1"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, {FILE: starter_path().read_bytes()})
        yield fake


@pytest.fixture
def paths(isolated_home: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> AppPaths:
    # Inherited by the daemon the tray launches: a free port, the fake Hub.
    monkeypatch.setenv("LOCALSERVE_PORT", "0")
    monkeypatch.setenv("LOCALSERVE_REMOTE_ADDRESS", "127.0.0.2")  # "remote" stays on loopback
    monkeypatch.setenv("LOCALSERVE_REMOTE_PORT", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(isolated_home / "hf"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(isolated_home / "xdg-config"))  # autostart entry
    return app_paths().ensure()


def ask(paths: AppPaths, model: str = STARTER_MODEL, max_tokens: int = 48) -> Any:
    state = read_state(paths.state_file)
    assert state is not None
    # Closed here, not by the garbage collector: a socket it finds open is a ResourceWarning,
    # an error in these tests, raised wherever the collection happens to run.
    with OpenAI(base_url=f"{state.url}/v1", api_key=KeyStore(paths).admin_key()) as client:
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Tell me about cats."}],
            max_tokens=max_tokens,
        )


def tooltip_rate(controller: TrayController) -> float:
    found = re.search(r"(\d+\.\d) tok/s", controller.tooltip())
    return float(found.group(1)) if found else 0.0


def test_the_tray_starts_serving_and_shows_live_figures(
    tray: TrayController, tray_states: list[str], qtbot: QtBot, paths: AppPaths
) -> None:
    assert tray_states[:2] == ["starting", "serving"]
    assert tray.tray.toolTip().startswith(f"localserve: serving {STARTER_MODEL}")
    qtbot.waitUntil(lambda: "RAM" in tray.tooltip(), timeout=10_000)  # with the first stats
    assert [a.data() for a in tray.model_actions()] == [STARTER_MODEL]
    assert tray.model_actions()[0].isChecked()
    dashboard = tray._show(
        "dashboard",
        lambda: __import__(
            "localserve.gui.windows.dashboard", fromlist=["DashboardWindow"]
        ).DashboardWindow(tray),
    )
    ask(paths)
    qtbot.waitUntil(lambda: tooltip_rate(tray) > 0, timeout=10_000)
    qtbot.waitUntil(lambda: (dashboard.charts["generation"].latest() or 0) > 0, timeout=10_000)
    # Live rates count tokens while they are generated; the finished request's record (its
    # time to first token and the totals) reaches the daemon a moment after the answer.
    qtbot.waitUntil(lambda: (dashboard.charts["ttft"].latest() or 0) > 0, timeout=10_000)
    qtbot.waitUntil(lambda: "1 requests" in dashboard.totals_label.text(), timeout=10_000)
    assert STARTER_MODEL in dashboard.models_label.text()
    # Which llama.cpp kernels serve it, as the engine check decided.
    assert "CPU kernels" in dashboard.models_label.text()
    assert f"{STARTER_MODEL} on CPU" in tray.tooltip()


def test_choosing_a_model_in_the_menu_loads_it(
    tray: TrayController, qtbot: QtBot, paths: AppPaths
) -> None:
    Library(paths.models_dir).import_file(starter_path(), name="other", copy=False)
    qtbot.waitUntil(lambda: "other" in [a.data() for a in tray.model_actions()], timeout=10_000)
    other = next(a for a in tray.model_actions() if a.data() == "other")
    assert not other.isChecked()
    other.trigger()
    qtbot.waitUntil(
        lambda: (
            tray.status is not None
            and any(m.model_id == "other" and m.state == "ready" for m in tray.status.models)
        ),
        timeout=SERVE_TIMEOUT_MS,
    )
    qtbot.waitUntil(
        lambda: next(a for a in tray.model_actions() if a.data() == "other").isChecked(),
        timeout=5_000,
    )
    assert ask(paths, "other").model == "other"


def test_a_download_shows_progress_and_lands_in_the_menu(
    tray: TrayController, qtbot: QtBot, hub: FakeHub
) -> None:
    tray.show_models_window()
    window = tray._open_windows["models"]
    window.query.setText("traypull")
    window.search()
    qtbot.waitUntil(lambda: window.repo_table.rowCount() == 1, timeout=10_000)
    assert window.repo_table.item(0, 0).text() == REPO
    window.repo_table.selectRow(0)
    qtbot.waitUntil(lambda: window.quant_table.rowCount() == 1, timeout=10_000)
    assert window.quant_table.item(0, 0).text() == "Q4_1"
    assert window.quant_table.item(0, 4).text().strip() == "CPU"
    hub.bytes_per_second = 30_000_000
    try:
        window.quant_table.cellWidget(0, 5).click()
        qtbot.waitUntil(
            lambda: any(0 < bar.value() < 1000 for bar in window.progress_bars.values()),
            timeout=10_000,
        )
    finally:
        hub.bytes_per_second = None
    qtbot.waitUntil(lambda: MODEL in [a.data() for a in tray.model_actions()], timeout=30_000)
    qtbot.waitUntil(
        lambda: ("Download finished", f"{MODEL} is ready to use.") in tray.notifications,
        timeout=10_000,
    )
    installed = [
        window.installed_table.item(r, 0).text() for r in range(window.installed_table.rowCount())
    ]
    assert MODEL in installed


def test_the_models_window_shows_hub_faults_and_a_download_waiting_for_network(
    tray: TrayController, qtbot: QtBot, hub: FakeHub
) -> None:
    tray.show_models_window()
    window = tray._open_windows["models"]
    window.query.setText("traypull")
    hub.script.append("html")  # a captive portal answers the search
    window.search()
    portal = (
        "The Hugging Face Hub answered with a web page instead of data (HTTP 200): a captive "
        "portal or proxy login page? Sign in to the network in a browser, then try again. "
        "Installed models still work."
    )
    qtbot.waitUntil(lambda: window.status_label.text() == portal, timeout=10_000)
    hub.bytes_per_second = 30_000_000
    try:
        quant = HubQuant(
            repo_id=REPO, quant="Q4_1", files=[FILE], size_bytes=0, fit=None, fit_problem=None
        )
        window.download(quant)
        qtbot.waitUntil(
            lambda: any(0 < bar.value() < 1000 for bar in window.progress_bars.values()),
            timeout=10_000,
        )
        hub.outage_until = time.monotonic() + 4
        qtbot.waitUntil(
            lambda: any(
                bar.format().startswith("waiting for network:") and "was lost" in bar.toolTip()
                for bar in window.progress_bars.values()
            ),
            timeout=10_000,
        )
    finally:
        hub.bytes_per_second = None
    qtbot.waitUntil(
        lambda: ("Download finished", f"{MODEL} is ready to use.") in tray.notifications,
        timeout=60_000,
    )


def test_a_killed_runner_shows_the_error_state_and_recovers(
    tray: TrayController, tray_states: list[str], qtbot: QtBot
) -> None:
    status = tray.status
    assert status is not None and status.models[0].pid is not None
    os.kill(status.models[0].pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: "error" in tray_states, timeout=10_000)
    qtbot.waitUntil(lambda: tray.state is TrayState.SERVING, timeout=SERVE_TIMEOUT_MS)
    qtbot.waitUntil(
        lambda: any(title == "Model runner restarted" for title, _ in tray.notifications),
        timeout=5_000,
    )


@pytest.fixture
def crash_limit_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSERVE_CRASH_LIMIT", "2")  # read by the daemon the tray launches


def test_a_crash_looping_runner_is_shown_as_failed(
    crash_limit_two: None, tray: TrayController, qtbot: QtBot
) -> None:
    for kill in range(2):
        qtbot.waitUntil(lambda: tray.state is TrayState.SERVING, timeout=SERVE_TIMEOUT_MS)
        status = tray.status
        assert status is not None and status.models[0].pid is not None
        os.kill(status.models[0].pid, signal.SIGKILL)
        if kill == 0:
            qtbot.waitUntil(
                lambda: any(title == "Model runner restarted" for title, _ in tray.notifications),
                timeout=SERVE_TIMEOUT_MS,
            )
    failed = f"{STARTER_MODEL} failed"
    qtbot.waitUntil(lambda: any(title == failed for title, _ in tray.notifications), timeout=15_000)
    message = next(message for title, message in tray.notifications if title == failed)
    assert "died 2 times" in message and "not restarted again" in message
    assert tray.state is TrayState.ERROR
    assert tray.headline() == f"localserve: {STARTER_MODEL} failed"
    assert "died 2 times" in tray.tooltip()


def test_a_second_launch_shows_the_first(
    tray: TrayController, qtbot: QtBot, paths: AppPaths
) -> None:
    # The first tray only has to accept the connection (the OS does) for the second to finish.
    second = subprocess.run(
        [sys.executable, "-m", "localserve", "tray"],
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stderr
    qtbot.waitUntil(
        lambda: "dashboard" in tray._open_windows and tray._open_windows["dashboard"].isVisible(),
        timeout=5_000,
    )


def test_stop_and_start_serving_from_the_menu(
    tray: TrayController, qtbot: QtBot, paths: AppPaths
) -> None:
    assert not tray._start_action.isEnabled() and tray._stop_action.isEnabled()
    tray._stop_action.trigger()
    qtbot.waitUntil(lambda: tray.state is TrayState.STOPPED, timeout=30_000)
    assert read_state(paths.state_file) is None
    assert tray._start_action.isEnabled() and not tray._copy_url.isEnabled()
    tray._start_action.trigger()
    assert tray.state is TrayState.STARTING
    qtbot.waitUntil(lambda: tray.state is TrayState.SERVING, timeout=SERVE_TIMEOUT_MS)


def test_settings_are_checked_and_saved(
    tray: TrayController, qtbot: QtBot, paths: AppPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtWidgets import QMessageBox

    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *args: warnings.append(args[2]))
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.No)
    tray.show_settings()
    window = tray._open_windows["settings"]
    window.gpu_layers.setText("lots")
    assert window.save() is False
    assert warnings and "gpu_layers" in warnings[0]
    assert not paths.config_file.exists()
    window.gpu_layers.setText("12")
    window.ctx.setValue(8192)
    window.max_loaded.setValue(3)
    window.local_only.setChecked(True)
    assert not window.start_at_login.isChecked()
    window.start_at_login.setChecked(True)
    assert window.save() is True
    autostart = Path(os.environ["XDG_CONFIG_HOME"]) / "autostart"
    entry = (autostart / "io.github.localserve.LocalServe.desktop").read_text()
    assert f"Exec={sys.executable} -m localserve tray" in entry
    qtbot.waitUntil(lambda: tray.status is not None and tray.status.local_only, timeout=5_000)
    saved = tomllib.loads(paths.config_file.read_text())
    assert saved["ctx"] == 8192 and saved["gpu_layers"] == 12 and saved["max_loaded_models"] == 3
    assert saved["local_only"] is True
    # The form shows the file over the defaults: LOCALSERVE_PORT=0 (this test's) is not saved.
    assert saved["port"] == 11435
    assert paths.config_file.stat().st_mode & 0o777 == 0o600
    window.start_at_login.setChecked(False)  # and off again: the entry is gone
    assert window.save() is True
    assert list(autostart.iterdir()) == []


def test_a_broken_config_file_is_reported_and_the_settings_window_repairs_it(
    qapp: Any, qtbot: QtBot, paths: AppPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.No)
    broken = 'ctx = 2048\nport = "11435\n'
    paths.config_file.write_text(broken)
    with started_tray(qapp, paths) as controller:
        # The daemon refuses the file; the tray says why at once, file and line included.
        qtbot.waitUntil(lambda: bool(controller.notifications), timeout=30_000)
        title, message = controller.notifications[-1]
        assert title == "localserve did not start"
        assert f"{paths.config_file}, line 2" in message
        assert controller.state is TrayState.STOPPED

        controller.show_settings()
        window = controller._open_windows["settings"]
        assert window.problem is not None and "line 2" in window.problem
        assert window.save() is True
        assert (paths.config_file.parent / "config.toml.corrupt").read_text() == broken
        assert tomllib.loads(paths.config_file.read_text())["port"] == 11435
        controller.start_serving()  # and it starts now (LOCALSERVE_PORT=0 still wins)
        qtbot.waitUntil(lambda: controller.state is TrayState.SERVING, timeout=SERVE_TIMEOUT_MS)


def test_the_remote_access_toggle(tray: TrayController, qtbot: QtBot, paths: AppPaths) -> None:
    assert tray._remote.isEnabled() and not tray._remote.isChecked()
    tray._remote.trigger()
    qtbot.waitUntil(lambda: tray.state is TrayState.REMOTE, timeout=15_000)
    assert tray.status is not None
    remote = tray.status.remote
    assert remote.url is not None
    assert remote.url.startswith("https://127.0.0.2:") and tray._remote.isChecked()
    assert remote.url in tray.tooltip()
    assert any(title == "Remote access on" for title, _ in tray.notifications)
    assert tomllib.loads(paths.config_file.read_text())["remote_enabled"] is True
    tray._connect.trigger()
    connect = tray._open_windows["connect"]
    assert connect.payload == f"{remote.url}\nsha256={remote.fingerprint}"
    assert not connect.qr.pixmap().isNull() and connect.qr.pixmap().width() > 100
    assert "lsk-" not in connect.payload and "lsa-" not in connect.payload  # never a key
    tray._remote.trigger()
    qtbot.waitUntil(lambda: tray.state is TrayState.SERVING, timeout=15_000)
    assert not tray._remote.isChecked()
