"""Cloud providers: add one (its key goes to the keyring and is never shown again), test it,
map local model names to its models, remove it; the usage ledger; the local-only switch.

Providers, mappings and keys live in ``providers.json`` and the keyring (``cloud/providers.py``),
which `localserve cloud ...` changes directly and the daemon re-reads when the file changes. This
window works on that same store, as the CLI does, and so does the Test button's check
(``router/provider_check.py``, the one behind `localserve cloud test`). All of it runs on worker
threads (the keyring, the files and the provider's network may each be slow); results come back
to the GUI thread, and each section shows its outcome in place, in one line. Only the local-only
switch needs the daemon: it is saved in ``config.toml`` and applied through the control API, as
`localserve cloud local-only` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from localserve.cloud.ledger import UsageLedger, UsageLine
from localserve.cloud.providers import PRESETS, Provider, ProviderStore, check_base_url
from localserve.config.settings import load_settings, update_config_file
from localserve.daemon.state import read_state
from localserve.gui.icons import icon
from localserve.gui.windows.models import table
from localserve.paths import AppPaths
from localserve.router.provider_check import ProviderCheck, check_provider

if TYPE_CHECKING:
    from localserve.gui.tray import TrayController

T = TypeVar("T")

REFRESH_MS = 2000  # re-read the store and the ledger this often while the window is shown
KEY_ADVICE = "remove it and add it again with the right key"
RESPONSES_CHOICES: list[tuple[str, bool | None]] = [
    ("Auto (only api.openai.com)", None),
    ("Relay /v1/responses as it is", True),
    ("Translate to chat completions", False),
]
COLORS = {"ok": "#15803d", "error": "#b00020", "warning": "#b45309", "info": "#4b5563"}


# -- the store, read and changed on worker threads ---------------------------------------------
@dataclass(frozen=True)
class ProviderEntry:
    provider: Provider
    key_stored: bool


@dataclass(frozen=True)
class CloudSnapshot:
    """What the window shows, read in one go on a worker thread."""

    stamp: tuple[int, int] | None  # providers.json's, to skip the keyring when it is unchanged
    providers: list[ProviderEntry]
    mappings: dict[str, str]
    usage: list[UsageLine]
    configured_local_only: bool  # config.toml's (the daemon's own policy is in its status)


@dataclass(frozen=True)
class AddedProvider:
    name: str
    key_location: str | None  # where the key went; None without a key
    warnings: list[str]


def read_cloud(paths: AppPaths, previous: CloudSnapshot | None) -> CloudSnapshot:
    store = ProviderStore(paths)
    stamp = store.stamp()
    if previous is not None and previous.stamp == stamp:
        providers, mappings = previous.providers, previous.mappings
    else:
        found, mappings = store.load()
        providers = [
            ProviderEntry(provider, store.key(name).get() is not None)
            for name, provider in sorted(found.items())
        ]
    usage = sorted(
        UsageLedger(paths.cloud_usage_file).lines(), key=lambda line: (line.provider, line.model)
    )
    local_only = load_settings(paths.config_file).local_only
    return CloudSnapshot(stamp, providers, mappings, usage, local_only)


def own_ports(paths: AppPaths) -> set[int]:
    """Ports this localserve listens on (or will), as `cloud add` checks: forwarding there
    would loop."""
    ports = {load_settings(paths.config_file).port}
    state = read_state(paths.state_file)
    if state is not None:
        ports.add(state.port)
    return ports


def add_provider(paths: AppPaths, provider: Provider, key: str | None) -> AddedProvider:
    warnings = check_base_url(provider.base_url, own_ports(paths))
    store = ProviderStore(paths)
    store.add(provider, key)
    location = store.key(provider.name).location() if key else None
    return AddedProvider(provider.name, location, warnings)


def check_stored_provider(paths: AppPaths, name: str) -> ProviderCheck:
    store = ProviderStore(paths)
    return check_provider(store.get(name), store.key(name).get(), KEY_ADVICE)


# -- widgets -----------------------------------------------------------------------------------
def one_line(text: str) -> str:
    """The first line of a message, its spaces squeezed (the rest goes in the tooltip)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else ""


def editable_combo(placeholder: str) -> QComboBox:
    combo = QComboBox()
    combo.setEditable(True)
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    combo.setLineEdit(edit)
    return combo


def cell_text(item: QTableWidgetItem | None) -> str:
    return item.text() if item is not None else ""


class MessageLine(QLabel):
    """One line under a section: what the last action there did, or why it failed."""

    def __init__(self) -> None:
        super().__init__("")
        # Long messages are clipped rather than widening the window; the tooltip has them whole.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.kind = ""

    def say(self, kind: str, text: str) -> None:
        self.kind = kind
        self.setText(one_line(text))
        self.setToolTip(text)
        self.setStyleSheet(f"color: {COLORS[kind]}")


class CloudWindow(QWidget):
    def __init__(self, controller: TrayController) -> None:
        super().__init__()
        self.controller = controller
        self.setWindowTitle("localserve: cloud providers")
        self.setWindowIcon(icon("localserve"))
        self.resize(1180, 660)
        self.snapshot: CloudSnapshot | None = None
        self.verdicts: dict[str, tuple[str, str]] = {}  # provider -> (kind, verdict)
        self.provider_models: dict[str, list[str]] = {}  # from the last successful test
        self.confirm_box: QMessageBox | None = None
        self._refreshing = False
        self._refresh_again = False
        self._switching = False
        self._local_only_seen: bool | None = None

        self.local_only = QCheckBox("Local only: never forward a request to a cloud provider")
        self.local_only.clicked.connect(self.set_local_only)
        self.local_only_message = MessageLine()

        self.provider_table = table(["Provider", "Base URL", "Key", "Options", "Test"], stretch=4)
        self.provider_table.itemSelectionChanged.connect(self._update_buttons)
        self.test_button = QPushButton("Test")
        self.test_button.clicked.connect(lambda: self.test(self.selected_provider()))
        self.remove_button = QPushButton("Remove...")
        self.remove_button.clicked.connect(lambda: self.ask_remove(self.selected_provider()))
        self.providers_message = MessageLine()

        self.name = QLineEdit()
        self.name.setPlaceholderText("openai, together, gpu-box ...")
        self.preset = QComboBox()
        self.preset.addItem("Your own base URL", "")
        for preset, url in sorted(PRESETS.items()):
            self.preset.addItem(preset, url)
        self.preset.activated.connect(self._use_preset)
        self.base_url = QLineEdit()
        self.base_url.setPlaceholderText("https://api.example.com/v1")
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("stored in the keyring, never shown again")
        self.allow_fallback = QCheckBox("May serve mapped local models that fail to load")
        self.responses_api = QComboBox()
        for label, value in RESPONSES_CHOICES:
            self.responses_api.addItem(label, value)
        self.add_button = QPushButton("Add provider")
        self.add_button.clicked.connect(self.add)
        self.add_message = MessageLine()

        self.mapping_table = table(["Local model", "Served by", ""], stretch=1)
        self.map_local = editable_combo("local model name")
        self.map_target = editable_combo("provider/model")
        self.map_button = QPushButton("Map")
        self.map_button.clicked.connect(self.map)
        self.map_message = MessageLine()

        self.usage_table = table(
            ["Provider/model", "Requests", "Prompt", "Output", "Est. cost"], stretch=0
        )
        self.usage_message = MessageLine()
        for grid in (self.provider_table, self.mapping_table, self.usage_table):
            grid.setWordWrap(
                False
            )  # one line a row; a long verdict is elided, whole in its tooltip

        self._lay_out()
        self._update_buttons()
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

    def _lay_out(self) -> None:
        providers_box = QGroupBox("Providers")
        providers_layout = QVBoxLayout(providers_box)
        providers_layout.addWidget(self.provider_table)
        buttons = QHBoxLayout()
        buttons.addWidget(self.test_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        providers_layout.addLayout(buttons)
        providers_layout.addWidget(self.providers_message)

        add_box = QGroupBox("Add a provider (any OpenAI-compatible API)")
        form = QFormLayout(add_box)
        form.addRow("Name", self.name)
        form.addRow("Preset", self.preset)
        form.addRow("Base URL", self.base_url)
        form.addRow("API key", self.key)
        form.addRow("Responses API", self.responses_api)
        form.addRow(self.allow_fallback)
        form.addRow(self.add_button)
        form.addRow(self.add_message)

        map_box = QGroupBox("Serve local model names from the cloud (too large, or not installed)")
        map_layout = QVBoxLayout(map_box)
        map_layout.addWidget(self.mapping_table)
        map_row = QHBoxLayout()
        map_row.addWidget(self.map_local, 1)
        map_row.addWidget(QLabel("→"))
        map_row.addWidget(self.map_target, 1)
        map_row.addWidget(self.map_button)
        map_layout.addLayout(map_row)
        map_layout.addWidget(self.map_message)

        usage_box = QGroupBox("Usage (tokens as providers reported them; cost from your prices)")
        usage_layout = QVBoxLayout(usage_box)
        usage_layout.addWidget(self.usage_table)
        usage_layout.addWidget(self.usage_message)

        left = QVBoxLayout()
        left.addWidget(providers_box, 1)
        left.addWidget(add_box)
        right = QVBoxLayout()
        right.addWidget(map_box, 1)
        right.addWidget(usage_box, 1)
        columns = QHBoxLayout()
        columns.addLayout(left, 4)
        columns.addLayout(right, 3)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(self.local_only)
        top.addWidget(self.local_only_message, 1)
        layout.addLayout(top)
        layout.addLayout(columns, 1)

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._timer.start()
        self.refresh()

    def hideEvent(self, event: Any) -> None:
        super().hideEvent(event)
        self._timer.stop()

    def work(
        self, job: Callable[[], T], done: Callable[[T], None], failed: Callable[[str], None]
    ) -> None:
        self.controller.background.run(job, done, failed)

    # -- reading -------------------------------------------------------------------------------
    def refresh(self) -> None:
        if self._refreshing:
            self._refresh_again = True  # after an action: read once more when this one ends
            return
        self._refreshing = True
        paths, previous = self.controller.paths, self.snapshot
        self.work(lambda: read_cloud(paths, previous), self._show, self._refresh_failed)

    def _refresh_failed(self, message: str) -> None:
        self._refreshing = False
        self.providers_message.say("error", message)

    def _show(self, snapshot: CloudSnapshot) -> None:
        self._refreshing = False
        previous, self.snapshot = self.snapshot, snapshot
        # Tables are rebuilt only when their data changed: not under the user's pointer.
        if previous is None or previous.providers != snapshot.providers:
            self._show_providers(snapshot.providers)
        if previous is None or previous.mappings != snapshot.mappings:
            self._show_mappings(snapshot.mappings)
        if previous is None or previous.usage != snapshot.usage:
            self._show_usage(snapshot.usage)
        self._update_map_choices()
        status = self.controller.status
        self._sync_local_only(status.local_only if status is not None else None, snapshot)
        if self._refresh_again:
            self._refresh_again = False
            self.refresh()

    def _show_providers(self, entries: list[ProviderEntry]) -> None:
        selected = self.selected_provider()
        known = {entry.provider.name for entry in entries}
        self.verdicts = {name: v for name, v in self.verdicts.items() if name in known}
        self.provider_table.clearSelection()
        self.provider_table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            provider = entry.provider
            options = [
                "fallback allowed" if provider.allow_fallback else "",
                "Responses API" if provider.speaks_responses else "",
            ]
            cells = [
                provider.name,
                provider.base_url,
                "stored" if entry.key_stored else "none",
                ", ".join(option for option in options if option),
            ]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.provider_table.setItem(row, column, item)
            self._show_verdict(row, *self.verdicts.get(provider.name, ("info", "not tested")))
            if provider.name == selected:
                self.provider_table.selectRow(row)
        self._update_buttons()

    def _show_mappings(self, mappings: dict[str, str]) -> None:
        self.mapping_table.setRowCount(len(mappings))
        for row, (local, target) in enumerate(sorted(mappings.items())):
            self.mapping_table.setItem(row, 0, QTableWidgetItem(local))
            self.mapping_table.setItem(row, 1, QTableWidgetItem(target))
            button = QPushButton("Unmap")
            button.clicked.connect(lambda _=False, name=local: self.unmap(name))
            self.mapping_table.setCellWidget(row, 2, button)

    def _show_usage(self, usage: list[UsageLine]) -> None:
        self.usage_table.setRowCount(len(usage))
        for row, line in enumerate(usage):
            cells = [
                f"{line.provider}/{line.model}",
                str(line.requests),
                str(line.prompt_tokens),
                str(line.completion_tokens),
                f"{line.cost:.4f}" if line.priced else "-",
            ]
            for column, text in enumerate(cells):
                self.usage_table.setItem(row, column, QTableWidgetItem(text))
        if not usage:
            self.usage_message.say("info", "Nothing has been forwarded to a cloud provider yet.")
        elif any(not line.priced for line in usage):
            self.usage_message.say("info", "'-': no price set for some of those requests.")
        else:
            self.usage_message.say("info", "")

    def _update_map_choices(self) -> None:
        """Local names: the library's models; targets: the models of tested providers."""
        locals_ = sorted({m.name for m in self.controller.models})
        known = (
            {entry.provider.name for entry in self.snapshot.providers} if self.snapshot else set()
        )
        targets = sorted(
            f"{name}/{model}"
            for name, models in self.provider_models.items()
            if name in known
            for model in models
        )
        for combo, choices in ((self.map_local, locals_), (self.map_target, targets)):
            current = [combo.itemText(index) for index in range(combo.count())]
            if current != choices:
                text = combo.currentText()
                combo.clear()
                combo.addItems(choices)
                combo.setEditText(text)

    def selected_provider(self) -> str | None:
        rows = self.provider_table.selectionModel().selectedRows()
        if not rows:
            return None
        return cell_text(self.provider_table.item(rows[0].row(), 0)) or None

    def provider_names(self) -> list[str]:
        grid = self.provider_table
        return [cell_text(grid.item(row, 0)) for row in range(grid.rowCount())]

    def verdict(self, name: str) -> str:
        """The Test column of provider ``name``."""
        return cell_text(self.provider_table.item(self.provider_names().index(name), 4))

    def _update_buttons(self) -> None:
        selected = self.selected_provider() is not None
        self.test_button.setEnabled(selected)
        self.remove_button.setEnabled(selected)

    # -- adding --------------------------------------------------------------------------------
    def _use_preset(self, index: int) -> None:
        url = self.preset.itemData(index)
        if url:
            self.base_url.setText(url)
            if not self.name.text().strip():
                self.name.setText(self.preset.itemText(index))

    def add(self) -> None:
        name, url = self.name.text().strip(), self.base_url.text().strip().rstrip("/")
        if not name or not url:
            self.add_message.say("error", "Give the provider a name and a base URL.")
            return
        provider = Provider(
            name,
            url,
            allow_fallback=self.allow_fallback.isChecked(),
            responses_api=self.responses_api.currentData(),
        )
        key = self.key.text().strip() or None
        paths = self.controller.paths
        self.add_button.setEnabled(False)
        self.add_message.say("info", f"Adding {name}...")
        self.work(lambda: add_provider(paths, provider, key), self._added, self._add_failed)

    def _added(self, added: AddedProvider) -> None:
        # setText also empties the undo history: nothing brings the key back into the field.
        self.key.setText("")
        self.name.setText("")
        self.base_url.setText("")
        self.preset.setCurrentIndex(0)
        self.allow_fallback.setChecked(False)
        self.responses_api.setCurrentIndex(0)
        self.add_button.setEnabled(True)
        where = f"key in {added.key_location}" if added.key_location else "no key"
        text = f"Added {added.name}, {where}: use its models as '{added.name}/MODEL'."
        if added.warnings:
            self.add_message.say("warning", f"{text} Warning: {added.warnings[0]}")
        else:
            self.add_message.say("ok", text)
        self.refresh()

    def _add_failed(self, message: str) -> None:
        self.add_button.setEnabled(True)
        self.add_message.say("error", message)  # the key stays (masked) to fix the rest

    # -- testing and removing ------------------------------------------------------------------
    def test(self, name: str | None) -> None:
        if name is None:
            return
        self._set_verdict(name, "info", "testing...")
        paths = self.controller.paths

        def done(check: ProviderCheck) -> None:
            self.provider_models[name] = check.models
            self._set_verdict(name, "ok", check.verdict())
            self._update_map_choices()

        self.work(
            lambda: check_stored_provider(paths, name),
            done,
            lambda message: self._set_verdict(name, "error", message),
        )

    def _set_verdict(self, name: str, kind: str, text: str) -> None:
        self.verdicts[name] = (kind, text)
        if name in self.provider_names():
            self._show_verdict(self.provider_names().index(name), kind, text)

    def _show_verdict(self, row: int, kind: str, text: str) -> None:
        """The Test column: the verdict in one line, whole in the tooltip."""
        item = QTableWidgetItem(one_line(text))
        item.setToolTip(text)
        item.setForeground(QColor(COLORS[kind]))
        self.provider_table.setItem(row, 4, item)

    def ask_remove(self, name: str | None) -> None:
        """Ask first (without waiting on the GUI thread: the box answers through a signal)."""
        if name is None:
            return
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Remove cloud provider",
            f"Remove {name}? Its key is deleted from the keyring, and local models mapped "
            "to it are unmapped.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def answered(button: Any) -> None:
            if box.standardButton(button) == QMessageBox.StandardButton.Yes:
                self.remove(name)

        box.buttonClicked.connect(answered)
        self.confirm_box = box
        box.open()

    def remove(self, name: str) -> None:
        paths = self.controller.paths

        def done(_: None) -> None:
            self.provider_models.pop(name, None)
            self.providers_message.say("ok", f"Removed {name}, its key and its mappings.")
            self.refresh()

        self.work(
            lambda: ProviderStore(paths).remove(name),
            done,
            lambda message: self.providers_message.say("error", message),
        )

    # -- mappings ------------------------------------------------------------------------------
    def map(self) -> None:
        local, target = self.map_local.currentText().strip(), self.map_target.currentText().strip()
        if not local or not target:
            self.map_message.say("error", "Give a local model name and a PROVIDER/MODEL.")
            return
        paths = self.controller.paths

        def done(_: None) -> None:
            self.map_message.say("ok", f"{local} → {target} when it cannot run here.")
            self.refresh()

        self.work(
            lambda: ProviderStore(paths).map(local, target),
            done,
            lambda message: self.map_message.say("error", message),
        )

    def unmap(self, local: str) -> None:
        paths = self.controller.paths

        def done(_: None) -> None:
            self.map_message.say("ok", f"{local} is no longer mapped.")
            self.refresh()

        self.work(
            lambda: ProviderStore(paths).unmap(local),
            done,
            lambda message: self.map_message.say("error", message),
        )

    # -- local only ----------------------------------------------------------------------------
    def _sync_local_only(self, daemon_value: bool | None, snapshot: CloudSnapshot) -> None:
        """Follow the daemon's policy (or config.toml without a daemon) when it changes there;
        a reply from before the user's own click is no change, so it does not undo the click."""
        value = daemon_value if daemon_value is not None else snapshot.configured_local_only
        if value != self._local_only_seen:
            self._local_only_seen = value
            if not self._switching:
                self.local_only.setChecked(value)

    def set_local_only(self, enabled: bool) -> None:
        paths, controller = self.controller.paths, self.controller
        self._switching = True
        self.local_only.setEnabled(False)
        self.local_only_message.say("info", "Saving...")

        def switch() -> tuple[bool, bool]:
            """(the policy now, whether a running daemon applied it)"""
            update_config_file(paths.config_file, local_only=enabled)
            if read_state(paths.state_file) is None:
                return enabled, False
            with controller.client() as client:
                return client.set_local_only(enabled).local_only, True

        def done(result: tuple[bool, bool]) -> None:
            state, applied = result
            self._switching = False
            self.local_only.setEnabled(True)
            self.local_only.setChecked(state)
            said = "on: nothing leaves this machine" if state else "off: providers may be used"
            later = "" if applied else " (saved; applies when serving starts)"
            self.local_only_message.say("ok", f"Local-only is {said}{later}.")
            controller.poll()

        def failed(message: str) -> None:
            self._switching = False
            self.local_only.setEnabled(True)
            self.local_only.setChecked(not enabled)
            self.local_only_message.say("error", message)

        self.work(switch, done, failed)
