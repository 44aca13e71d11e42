"""The tray's cloud window against a real daemon and a fake OpenAI-compatible provider on
loopback (tests/helpers/fake_cloud.py): add, test, map and remove providers, the usage ledger
and the local-only switch (pytest-qt, offscreen Qt).

Keys go to a keyring shared by this process and the daemon that keeps nothing in plain text
(tests/helpers/fake_keyring.py), as a system keyring would, so "the key is in no file" can be
checked by searching every file for it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import keyring
import pytest
import tomllib
from PySide6.QtWidgets import QLabel, QLineEdit, QMessageBox, QTableWidget
from pytestqt.qtbot import QtBot

from localserve.cloud.providers import Price, ProviderStore
from localserve.gui.background import Background
from localserve.gui.tray import TrayController
from localserve.gui.windows.cloud import CloudWindow
from localserve.paths import AppPaths, app_paths
from localserve.security.keys import KeyStore
from tests.helpers.daemon_process import DaemonProcess
from tests.helpers.fake_cloud import MODELS, FakeCloud
from tests.helpers.fake_keyring import FILE_ENV, ScrambledFileKeyring

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-window-secret-4f1c9a7e2b"
SCRAMBLED = "tests.helpers.fake_keyring.ScrambledFileKeyring"
WAIT_MS = 15_000


class KeyringDaemon(DaemonProcess):
    """A daemon whose admin key is in the (shared) keyring rather than the fallback file."""

    def __init__(self, home: Path, paths: AppPaths, env: dict[str, str]) -> None:
        super().__init__(home, env=env)
        self.paths = paths

    @property
    def admin_key(self) -> str:
        return KeyStore(self.paths).admin_key()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cloud-window")


@pytest.fixture(scope="module")
def shared_keyring(root: Path) -> Iterator[dict[str, str]]:
    """The scrambled keyring, here and (through the environment) in the daemon."""
    env = {
        "PYTHON_KEYRING_BACKEND": SCRAMBLED,
        FILE_ENV: str(root / "keyring.json"),
        "PYTHONPATH": str(REPO_ROOT),
    }
    previous = keyring.get_keyring()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        keyring.set_keyring(ScrambledFileKeyring())
        try:
            yield env
        finally:
            keyring.set_keyring(previous)


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud(key=KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(root: Path, shared_keyring: dict[str, str]) -> Iterator[KeyringDaemon]:
    home = root / "home"
    paths = app_paths({"LOCALSERVE_HOME": str(home)})
    with KeyringDaemon(home, paths, shared_keyring) as running:
        running.wait_until_model("ready")
        yield running


@pytest.fixture(scope="module")
def tray(qapp: Any, daemon: KeyringDaemon) -> Iterator[TrayController]:
    controller = TrayController(daemon.paths, Background(), poll_interval=0.25)
    controller.start(launch_daemon=False)
    try:
        yield controller
    finally:
        controller.shutdown()


@pytest.fixture
def window(tray: TrayController, qtbot: QtBot) -> CloudWindow:
    qtbot.waitUntil(lambda: tray.status is not None, timeout=WAIT_MS)
    tray.show_cloud_window()
    shown: CloudWindow = tray._open_windows["cloud"]
    qtbot.waitUntil(lambda: shown.snapshot is not None, timeout=WAIT_MS)
    return shown


def add(window: CloudWindow, qtbot: QtBot, name: str, url: str, key: str = KEY) -> None:
    window.name.setText(name)
    window.base_url.setText(url)
    window.key.setText("")
    qtbot.keyClicks(window.key, key)  # typed, as a person would: the field has undo history
    window.add_button.click()
    qtbot.waitUntil(lambda: name in window.provider_names(), timeout=WAIT_MS)


def select(window: CloudWindow, name: str) -> None:
    window.provider_table.selectRow(window.provider_names().index(name))


def listed_models(daemon: DaemonProcess) -> set[str]:
    response = httpx.get(f"{daemon.base_url}/models", headers=daemon.headers(), timeout=30)
    response.raise_for_status()
    return {model["id"] for model in response.json()["data"]}


def shown_texts(window: CloudWindow) -> list[str]:
    """Every text the window shows or keeps in a widget (fields, labels, tooltips, cells)."""
    texts = [edit.text() for edit in window.findChildren(QLineEdit)]
    texts += [label.text() + label.toolTip() for label in window.findChildren(QLabel)]
    for grid in window.findChildren(QTableWidget):
        for row in range(grid.rowCount()):
            for column in range(grid.columnCount()):
                item = grid.item(row, column)
                texts += [item.text(), item.toolTip()] if item is not None else []
    return texts


def files_holding(root: Path, secret: str) -> list[Path]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and secret.encode() in path.read_bytes():
                found.append(path)
    return found


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_provider_added_in_the_window_is_served_and_its_key_kept_secret(
    window: CloudWindow, qtbot: QtBot, daemon: KeyringDaemon, cloud: FakeCloud, root: Path
) -> None:
    window.responses_api.setCurrentIndex(1)  # "Relay /v1/responses as it is"
    add(window, qtbot, "fake", cloud.base_url)
    row = window.provider_names().index("fake")
    assert window.provider_table.item(row, 2).text() == "stored"
    assert window.provider_table.item(row, 3).text() == "Responses API"
    assert window.add_message.text().startswith("Added fake, key in system keyring")
    # The key field is empty, with no undo to bring the key back.
    assert window.key.text() == "" and not window.key.isUndoAvailable()
    assert not any(KEY in text for text in shown_texts(window))

    qtbot.waitUntil(lambda: "fake/gpt-test" in listed_models(daemon), timeout=WAIT_MS)
    stored = ProviderStore(daemon.paths)
    assert stored.get("fake").responses_api is True
    assert stored.key("fake").get() == KEY  # in the keyring, where the daemon found it
    assert not (daemon.paths.config_dir / "provider-keys").exists()
    assert files_holding(root, KEY) == []  # providers.json, config, logs, the keyring's file
    assert not any(KEY in message for _, message in window.controller.notifications)


def test_test_says_ok_or_what_is_wrong_in_one_line(
    window: CloudWindow, qtbot: QtBot, cloud: FakeCloud
) -> None:
    gone_url = f"http://127.0.0.1:{closed_port()}/v1"
    add(window, qtbot, "probe", cloud.base_url)
    add(window, qtbot, "wrongkey", cloud.base_url, key="sk-not-the-right-one")
    add(window, qtbot, "gone", gone_url, key="")
    assert window.verdict("probe") == "not tested"
    expected = {
        "probe": "probe works: 3 models.",
        "wrongkey": "wrongkey refused the key (HTTP 401: Incorrect API key provided.); remove "
        "it and add it again with the right key.",
        "gone": "Cannot reach the provider 'gone': 127.0.0.1 refused the connection.",
    }
    for name, verdict in expected.items():
        select(window, name)
        assert window.test_button.isEnabled()
        window.test_button.click()
        qtbot.waitUntil(
            lambda name=name, verdict=verdict: window.verdict(name) == verdict, timeout=WAIT_MS
        )
    # A working provider's models become the mapping targets on offer.
    targets = [window.map_target.itemText(i) for i in range(window.map_target.count())]
    assert targets == sorted(f"probe/{model}" for model in MODELS)


def test_a_local_name_mapped_in_the_window_is_served_by_the_provider(
    window: CloudWindow, qtbot: QtBot, daemon: KeyringDaemon, cloud: FakeCloud
) -> None:
    add(window, qtbot, "mapper", cloud.base_url)
    window.map_local.setEditText("Huge-Model")
    window.map_target.setEditText("mapper/gpt-test")
    window.map_button.click()
    qtbot.waitUntil(lambda: window.mapping_table.rowCount() == 1, timeout=WAIT_MS)
    assert window.mapping_table.item(0, 0).text() == "huge-model"
    assert window.mapping_table.item(0, 1).text() == "mapper/gpt-test"
    served = daemon.chat("huge-model")
    assert served.status_code == 200, served.text
    assert served.headers["x-localserve-backend"] == "mapper"

    window.map_target.setEditText("nobody/gpt-test")
    window.map_button.click()
    qtbot.waitUntil(lambda: window.map_message.kind == "error", timeout=WAIT_MS)
    assert window.map_message.text().startswith("No cloud provider named 'nobody'.")
    assert "\n" not in window.map_message.text()

    window.mapping_table.cellWidget(0, 2).click()  # Unmap
    qtbot.waitUntil(lambda: window.mapping_table.rowCount() == 0, timeout=WAIT_MS)
    assert daemon.chat("huge-model").status_code == 404


def test_the_ledger_shows_a_forwarded_request(
    window: CloudWindow, qtbot: QtBot, daemon: KeyringDaemon, cloud: FakeCloud
) -> None:
    add(window, qtbot, "ledgered", cloud.base_url)
    store = ProviderStore(daemon.paths)
    provider = store.get("ledgered")
    provider.prices["gpt-test"] = Price(1000.0, 2000.0)  # per million tokens
    store.update(provider)
    assert daemon.chat("ledgered/gpt-test").status_code == 200

    def usage_row() -> list[str]:
        grid = window.usage_table
        for row in range(grid.rowCount()):
            cells = [grid.item(row, column).text() for column in range(grid.columnCount())]
            if cells[0] == "ledgered/gpt-test":
                return cells
        return []

    qtbot.waitUntil(lambda: usage_row() != [], timeout=WAIT_MS)
    # 11 prompt and 5 output tokens (the fake's usage): (11 * 1000 + 5 * 2000) / 1e6.
    assert usage_row() == ["ledgered/gpt-test", "1", "11", "5", "0.0210"]


def test_the_local_only_switch_sets_the_daemons_policy(
    window: CloudWindow, qtbot: QtBot, daemon: KeyringDaemon, cloud: FakeCloud
) -> None:
    add(window, qtbot, "guarded", cloud.base_url)
    assert daemon.chat("guarded/gpt-test").status_code == 200
    assert not window.local_only.isChecked()
    try:
        window.local_only.click()
        qtbot.waitUntil(lambda: daemon.status().local_only, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: window.local_only.isEnabled(), timeout=WAIT_MS)
        assert window.local_only_message.text() == "Local-only is on: nothing leaves this machine."
        refused = daemon.chat("guarded/gpt-test")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forwarding_not_allowed"
        config = tomllib.loads(daemon.paths.config_file.read_text())
        assert config["local_only"] is True
        qtbot.wait(1000)  # polls and refreshes come and go: the box stays as clicked
        assert window.local_only.isChecked()

        window.local_only.click()
        qtbot.waitUntil(lambda: not daemon.status().local_only, timeout=WAIT_MS)
        assert daemon.chat("guarded/gpt-test").status_code == 200
    finally:
        daemon.control("POST", "/local-only", json={"enabled": False})


def test_remove_asks_first_then_deletes_the_provider_and_its_key(
    window: CloudWindow, qtbot: QtBot, daemon: KeyringDaemon, cloud: FakeCloud
) -> None:
    add(window, qtbot, "doomed", cloud.base_url)
    qtbot.waitUntil(lambda: "doomed/gpt-test" in listed_models(daemon), timeout=WAIT_MS)
    select(window, "doomed")
    window.remove_button.click()
    box = window.confirm_box
    assert box is not None and box.isVisible() and "doomed" in box.text()
    box.button(QMessageBox.StandardButton.No).click()
    qtbot.wait(500)
    assert "doomed" in window.provider_names() and "doomed" in ProviderStore(daemon.paths).load()[0]

    window.remove_button.click()
    box = window.confirm_box
    assert box is not None
    box.button(QMessageBox.StandardButton.Yes).click()
    qtbot.waitUntil(lambda: "doomed" not in window.provider_names(), timeout=WAIT_MS)
    assert window.providers_message.text() == "Removed doomed, its key and its mappings."
    assert "doomed" not in ProviderStore(daemon.paths).load()[0]
    assert ScrambledFileKeyring().get_password("localserve", "provider-doomed") is None
    qtbot.waitUntil(
        lambda: not any(m.startswith("doomed/") for m in listed_models(daemon)), timeout=WAIT_MS
    )
