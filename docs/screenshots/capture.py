"""Take the README's screenshots: the tray menu, the models, dashboard, chat, settings and cloud
windows (and the models window with a download waiting for the network).

Run under a real X server (the images in this folder were taken under Xvfb):

    xvfb-run -s "-screen 0 1280x860x24" .venv/bin/python docs/screenshots/capture.py

or take only some of them by name (dashboard, models, chat, settings, cloud, tray-menu); the windows
also render under QT_QPA_PLATFORM=offscreen (cloud-window.png was taken that way):

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/capture.py cloud

It uses a throwaway LOCALSERVE_HOME, starts the daemon on the starter model, sends a few
requests so the charts have something to show, and serves a small fake Hub
(tests/helpers/fake_hub.py) so the models window lists a repo without internet access, and a
fake OpenAI-compatible provider (tests/helpers/fake_cloud.py) for the cloud window. Keys go to
tests/helpers/fake_keyring.py's keyring (in the throwaway home), standing in for the system's.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
HOME = Path(tempfile.mkdtemp(prefix="localserve-shots-"))
os.environ.update(
    LOCALSERVE_HOME=str(HOME),
    LOCALSERVE_PORT="0",
    XDG_CONFIG_HOME=str(HOME / "xdg-config"),  # the autostart entry the settings window shows
    PYTHON_KEYRING_BACKEND="tests.helpers.fake_keyring.ScrambledFileKeyring",
    FAKE_KEYRING_FILE=str(HOME / "keyring.json"),
    PYTHONPATH=str(HERE.parents[1]),  # the daemon imports that keyring too
)

from openai import OpenAI  # noqa: E402
from PySide6.QtCore import QPoint, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from localserve.cloud.providers import Price, ProviderStore  # noqa: E402
from localserve.daemon.launcher import stop_daemon  # noqa: E402
from localserve.daemon.state import read_state  # noqa: E402
from localserve.gui.app import create_tray  # noqa: E402
from localserve.gui.tray import TrayController  # noqa: E402
from localserve.gui.windows.model_settings import ModelSettingsDialog  # noqa: E402
from localserve.paths import AppPaths, app_paths  # noqa: E402
from localserve.security.keys import KeyStore  # noqa: E402
from tests.helpers.fake_cloud import FakeCloud  # noqa: E402
from tests.helpers.fake_hub import FakeHub  # noqa: E402
from tests.helpers.model_files import starter_path  # noqa: E402


def wait_for(app: QApplication, condition: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError
        app.processEvents()
        time.sleep(0.02)


def settle(app: QApplication, seconds: float) -> None:
    end = time.monotonic() + seconds
    wait_for(app, lambda: time.monotonic() > end, seconds + 5)


def grab_menus(app: QApplication, menus: list[QWidget], name: str) -> None:
    """The screen around ``menus`` (popups are separate windows: grab the screen, not them)."""
    settle(app, 0.5)
    screen = app.primaryScreen()
    assert screen is not None
    area = menus[0].geometry()
    for menu in menus[1:]:
        area = area.united(menu.geometry())
    area = area.adjusted(-12, -12, 12, 12)
    screen.grabWindow(0, area.x(), area.y(), area.width(), area.height()).save(str(HERE / name))
    print("saved", name)


def grab_window(app: QApplication, window: QWidget, name: str) -> None:
    settle(app, 0.5)
    window.grab().save(str(HERE / name))
    print("saved", name)


def load(paths: object) -> None:
    state = read_state(paths.state_file)  # type: ignore[attr-defined]
    assert state is not None
    client = OpenAI(base_url=f"{state.url}/v1", api_key=KeyStore(paths).admin_key())  # type: ignore[arg-type]
    for index in range(12):
        stream = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": f"Write a poem about the number {index}."}],
            max_tokens=120,
            stream=True,
        )
        for _ in stream:
            pass
        time.sleep(1.5)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cloud_window(app: QApplication, tray: TrayController, paths: AppPaths) -> None:
    """A provider added through the window, tested, mapped and used; and one that is down."""
    with FakeCloud() as cloud:
        tray.show_cloud_window()
        window = tray._open_windows["cloud"]
        window.move(20, 20)
        wait_for(app, lambda: window.snapshot is not None)
        for name, url, key in [
            ("lab-vllm", f"http://127.0.0.1:{closed_port()}/v1", ""),
            ("gpu-box", cloud.base_url, cloud.key),
        ]:
            window.name.setText(name)
            window.base_url.setText(url)
            window.key.setText(key)
            window.add_button.click()
            wait_for(app, lambda name=name: name in window.provider_names(), 15)
        store = ProviderStore(paths)
        provider = store.get("gpu-box")
        provider.prices["gpt-test"] = Price(60.0, 120.0)  # per million: a costly model
        store.update(provider)
        state = read_state(paths.state_file)
        assert state is not None
        with OpenAI(base_url=f"{state.url}/v1", api_key=KeyStore(paths).admin_key()) as client:
            for model in ["gpt-test", "gpt-test", "gpt-test", "gpt-big"]:
                client.chat.completions.create(
                    model=f"gpu-box/{model}", messages=[{"role": "user", "content": "Hi"}]
                )
        for name in ("lab-vllm", "gpu-box"):
            window.provider_table.selectRow(window.provider_names().index(name))
            window.test_button.click()
            wait_for(app, lambda name=name: window.verdict(name) != "testing...", 30)
        window.map_local.setEditText("qwen2.5-72b-instruct")
        window.map_target.setEditText("gpu-box/gpt-big")
        window.map_button.click()
        wait_for(app, lambda: window.mapping_table.rowCount() == 1, 15)
        wait_for(app, lambda: window.usage_table.rowCount() == 2, 15)
        grab_window(app, window, "cloud-window.png")
        window.hide()


def main() -> None:
    wanted = set(sys.argv[1:]) or {
        "dashboard",
        "models",
        "model-settings",
        "chat",
        "settings",
        "cloud",
        "tray-menu",
    }
    hub = FakeHub()
    data = starter_path().read_bytes()
    hub.add_repo(
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-135M-Instruct-Q4_1.gguf": data}
    )
    hub.add_repo("example/SmolLM2-135M-Instruct-Q8-GGUF", {"SmolLM2-135M-Instruct-Q8_0.gguf": data})
    hub.__enter__()
    os.environ.update(HF_ENDPOINT=hub.url, HF_HOME=str(HOME / "hf"))
    app = QApplication(sys.argv)
    app.setQuitOnLastWindowClosed(False)
    paths = app_paths().ensure()
    created = create_tray(app, paths, poll_interval=0.5, stats_interval=1.0)
    assert created is not None
    tray, _instance = created
    tray.start()
    try:
        wait_for(app, lambda: tray.state.value == "serving")
        if "dashboard" in wanted:
            dashboard_window(app, tray, paths)
        if "models" in wanted:
            models_window(app, tray, hub)
        if "model-settings" in wanted:
            model_settings(app, tray)
        if "chat" in wanted:
            chat_window(app, tray)
        if "settings" in wanted:
            settings_window(app, tray)
        if "tray-menu" in wanted:
            tray_menu(app, tray)
        if "cloud" in wanted:
            cloud_window(app, tray, paths)
    finally:
        hub.bytes_per_second = None
        tray.shutdown()
        stop_daemon(paths)
        hub.__exit__()


def dashboard_window(app: QApplication, tray: TrayController, paths: AppPaths) -> None:
    traffic = threading.Thread(target=load, args=(paths,), daemon=True)
    traffic.start()
    tray.show_dashboard()
    dashboard = tray._open_windows["dashboard"]
    dashboard.move(20, 20)
    wait_for(app, lambda: not traffic.is_alive(), 240)
    grab_window(app, dashboard, "dashboard.png")
    dashboard.hide()


def models_window(app: QApplication, tray: TrayController, hub: FakeHub) -> None:
    tray.show_models_window()
    models = tray._open_windows["models"]
    models.move(20, 20)
    models.query.setText("smollm2")
    models.search()
    wait_for(app, lambda: models.repo_table.rowCount() == 2)
    models.repo_table.selectRow(0)
    wait_for(app, lambda: models.quant_table.rowCount() == 1)
    hub.bytes_per_second = 8_000_000
    models.quant_table.cellWidget(0, 5).click()
    wait_for(app, lambda: any(0 < b.value() < 1000 for b in models.progress_bars.values()))
    settle(app, 3)
    grab_window(app, models, "models.png")
    hub.outage_until = time.monotonic() + 600  # the network goes away mid-download
    wait_for(
        app,
        lambda: any(
            b.format().startswith("waiting for network") for b in models.progress_bars.values()
        ),
    )
    settle(app, 1)
    grab_window(app, models, "models-waiting.png")
    hub.outage_until = 0.0
    models.hide()


def model_settings(app: QApplication, tray: TrayController) -> None:
    """The starter's own settings, as a person would tune it, saved through the daemon."""
    dialog = ModelSettingsDialog(tray, "smollm2-135m-instruct")
    dialog.move(20, 20)
    dialog.show()
    wait_for(app, dialog.save_button.isEnabled)
    dialog.lines["ctx"].setText("8192")
    dialog.lines["temperature"].setText("0.6")
    dialog.lines["stop"].setText("<|im_end|>")
    dialog.choices["cache_type_k"].setCurrentText("q8_0")
    dialog.choices["cache_type_v"].setCurrentText("q8_0")
    dialog.system.setPlainText("You are a concise assistant.")
    dialog.save()
    wait_for(app, lambda: dialog.note.text().startswith("Saved"))
    settle(app, 0.5)
    grab_window(app, dialog, "model-settings.png")
    dialog.hide()


CHAT_QUESTIONS = [
    "Write a Python function that returns the square of a number.",
    "Thanks! How would I call it?",
]


def chat_window(app: QApplication, tray: TrayController) -> None:
    """A real conversation with the starter model, two questions long."""
    tray.show_chat()
    chat = tray._open_windows["chat"]
    chat.move(20, 20)
    wait_for(app, lambda: chat.model_box.findText("smollm2-135m-instruct") >= 0)
    chat.model_box.setCurrentText("smollm2-135m-instruct")
    chat.system_prompt.setPlainText("You are a helpful assistant. Answer in Markdown.")
    chat.temperature.setValue(0)
    chat.max_tokens.setValue(200)
    for question in CHAT_QUESTIONS:
        chat.input.setPlainText(question)
        chat.send()
        wait_for(app, lambda: not chat.busy, 180)
    settle(app, 1)
    grab_window(app, chat, "chat-window.png")
    chat.hide()


def settings_window(app: QApplication, tray: TrayController) -> None:
    tray.show_settings()
    settings = tray._open_windows["settings"]
    settings.move(20, 20)
    settings.start_at_login.setChecked(True)
    settle(app, 0.5)
    grab_window(app, settings, "settings.png")
    settings.hide()


def tray_menu(app: QApplication, tray: TrayController) -> None:
    tray.menu.popup(QPoint(900, 30))
    settle(app, 0.5)
    tray.model_menu.popup(QPoint(900 - tray.model_menu.sizeHint().width(), 120))
    grab_menus(app, [tray.menu, tray.model_menu], "tray-menu.png")
    tray.model_menu.hide()
    tray.menu.hide()


if __name__ == "__main__":
    QTimer.singleShot(0, lambda: None)
    main()
