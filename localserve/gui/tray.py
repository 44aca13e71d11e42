"""The tray icon and its menu: the state of serving at a glance, and every action one click away.

The controller polls the daemon's status, models and pulls (every ``poll_interval`` seconds) and
follows the live stats stream; each poll runs on a worker thread. Icon, tooltip, menu and
notifications are all derived from those replies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from PySide6.QtCore import QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QInputDialog, QMenu, QMessageBox, QSystemTrayIcon

from localserve.api.control import (
    DaemonStatus,
    LibraryModel,
    PullSnapshot,
    PullState,
    RemoteStatus,
    StatsSnapshot,
)
from localserve.config.settings import update_config_file
from localserve.daemon.client import DaemonClient
from localserve.daemon.launcher import Launch, start_daemon, stop_daemon
from localserve.daemon.state import read_state
from localserve.gui.background import Background, StatsStream
from localserve.gui.icons import icon
from localserve.paths import AppPaths
from localserve.security.keys import KeyStore
from localserve.units import format_bytes

T = TypeVar("T")

START_GRACE_S = 120.0  # how long a daemon we launched may take to write its state file


class TrayState(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    SERVING = "serving"
    BUSY = "busy"
    ERROR = "error"
    REMOTE = "remote"


@dataclass(frozen=True)
class Polled:
    """One poll of the daemon."""

    status: DaemonStatus
    models: list[LibraryModel]
    pulls: list[PullSnapshot]


def derive_state(
    status: DaemonStatus | None, stats: StatsSnapshot | None, launching: bool
) -> TrayState:
    """The icon's state from the daemon's status and live stats (None: no daemon)."""
    if status is None:
        return TrayState.STARTING if launching else TrayState.STOPPED
    models = status.models
    if any(m.state in ("failed", "restarting") for m in models):
        return TrayState.ERROR
    default = status.model(status.default_model)
    if not models or (default is not None and default.state == "starting"):
        return TrayState.STARTING
    if stats is not None and stats.live.active_requests > 0:
        return TrayState.BUSY
    if status.remote.enabled:
        return TrayState.REMOTE
    return TrayState.SERVING


def describe_rate(stats: StatsSnapshot | None) -> str:
    if stats is None:
        return "no requests yet"
    live = stats.live.generation_tps
    if live > 0:
        return f"{live:.1f} tok/s"
    last = stats.last_request
    if last is not None and last.generation_tps:
        return f"idle (last request {last.generation_tps:.1f} tok/s)"
    return "idle"


def describe_memory(stats: StatsSnapshot | None) -> str:
    if stats is None:
        return ""
    memory = stats.memory
    text = (
        f"RAM {format_bytes(memory.ram_used_bytes)} / {format_bytes(memory.ram_total_bytes)}"
        f" (models {format_bytes(memory.runners_rss_bytes)})"
    )
    for gpu in memory.gpus:
        text += f", VRAM {format_bytes(gpu.used_bytes)} / {format_bytes(gpu.total_bytes)}"
    return text


class TrayController(QObject):
    state_changed = Signal(str)
    models_changed = Signal()
    stats_received = Signal(object)  # a StatsSnapshot

    def __init__(
        self,
        paths: AppPaths,
        background: Background,
        poll_interval: float = 1.0,
        stats_interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.paths = paths
        self.background = background
        self.state = TrayState.STOPPED
        self.status: DaemonStatus | None = None
        self.stats: StatsSnapshot | None = None
        self.models: list[LibraryModel] = []
        self.pulls: dict[str, PullSnapshot] = {}
        self.notifications: list[tuple[str, str]] = []  # (title, message), newest last
        self.last_error: str | None = None
        self._launched_at: float | None = None
        self._launch: Launch | None = None
        self._stopping = False
        self._polling = False
        self._restarts: dict[str, int] = {}
        self._failed: set[str] = set()
        self._admin_key: str | None = None
        self._open_windows: dict[str, Any] = {}

        self.tray = QSystemTrayIcon(icon("tray-stopped"))
        self.menu = QMenu()
        self._build_menu()
        self.tray.setContextMenu(self.menu)
        self.tray.activated.connect(self._on_activated)
        self._update_presentation()

        self._timer = QTimer(self)
        self._timer.setInterval(int(poll_interval * 1000))
        self._timer.timeout.connect(self.poll)
        self._stream = StatsStream(
            self.client, background.dispatcher, self._on_stats, interval=stats_interval
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, launch_daemon: bool = True) -> None:
        self.tray.show()
        if launch_daemon and read_state(self.paths.state_file) is None:
            self.start_serving()
        self._timer.start()
        self._stream.start()
        self.poll()

    def shutdown(self) -> None:
        self._timer.stop()
        self._stream.stop()
        self.tray.hide()
        for window in self._open_windows.values():
            window.close()

    def client(self, timeout: float = 10.0) -> DaemonClient:
        """A client of the running daemon (raises DaemonNotRunningError). Any thread."""
        state = read_state(self.paths.state_file)
        if state is None:
            return DaemonClient.connect(self.paths, timeout)
        if self._admin_key is None:
            self._admin_key = KeyStore(self.paths).admin_key()
        return DaemonClient(state, self._admin_key, timeout)

    def call(
        self,
        work: Callable[[DaemonClient], T],
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Run ``work(client)`` on a worker thread; results come back on the GUI thread."""

        def run() -> T:
            with self.client(timeout) as client:
                return work(client)

        self.background.run(run, on_done, on_error or self.report_error)

    # -- polling -----------------------------------------------------------------------------
    def poll(self) -> None:
        if self._polling:
            return
        self._polling = True

        def fetch() -> Polled | None:
            if read_state(self.paths.state_file) is None:
                return None
            with self.client(5.0) as client:
                return Polled(client.status(), client.models(), client.pulls())

        def done(result: Polled | None) -> None:
            self._polling = False
            self._on_polled(result)

        def failed(message: str) -> None:
            self._polling = False
            self._on_polled(None, message)

        self.background.run(fetch, done, failed)

    def _on_polled(self, result: Polled | None, error: str | None = None) -> None:
        if self._stopping:
            return  # the daemon is going away: its replies (or silence) say nothing new
        if result is None:
            self.status = None
            if error:
                self.last_error = error
            launched = self._launched_at
            if launched is not None:
                failure = self._launch.failure() if self._launch is not None else None
                if failure is not None:
                    self._launched_at = self._launch = None
                    self.last_error = failure
                    self.notify("localserve did not start", failure)
                elif time.monotonic() - launched > START_GRACE_S:
                    self._launched_at = self._launch = None
                    self.notify("localserve did not start", f"See {self.paths.log_dir}.")
        else:
            self._launched_at = self._launch = None
            self.status = result.status
            self._check_models(result.status)
            listed = [(m.name, m.state) for m in result.models]
            if listed != [(m.name, m.state) for m in self.models]:
                self.models = result.models
                self._rebuild_model_menu()
                self.models_changed.emit()
            self._check_pulls(result.pulls)
        self._update_presentation()

    def _on_stats(self, snapshot: StatsSnapshot) -> None:
        self.stats = snapshot
        self._update_presentation()
        self.stats_received.emit(snapshot)

    def _check_models(self, status: DaemonStatus) -> None:
        for model in status.models:
            name, restarts = model.model_id, model.restarts
            if restarts > self._restarts.get(name, restarts):
                self.notify(
                    "Model runner restarted",
                    f"The runner for {name} stopped ({model.last_error or 'crashed'}) "
                    "and was restarted.",
                )
            self._restarts[name] = restarts
            if model.state == "failed" and name not in self._failed:
                self._failed.add(name)
                self.notify(f"{name} failed", model.last_error or "It could not load.")
            elif model.state != "failed":
                self._failed.discard(name)

    def _check_pulls(self, pulls: list[PullSnapshot]) -> None:
        for job in pulls:
            before = self.pulls.get(job.id)
            if before is not None and before.active:
                if job.state is PullState.DONE:
                    self.notify("Download finished", f"{job.model} is ready to use.")
                elif job.state is PullState.FAILED:
                    self.notify("Download failed", job.error or "")
            self.pulls[job.id] = job

    # -- presentation --------------------------------------------------------------------------
    def _update_presentation(self) -> None:
        state = derive_state(self.status, self.stats, self._launched_at is not None)
        if state is not self.state:
            self.state = state
            self.tray.setIcon(icon(f"tray-{state.value}"))
            self.state_changed.emit(state.value)
        self.tray.setToolTip(self.tooltip())
        running = self.status is not None
        self._header.setText("localserve: stopping..." if self._stopping else self.headline())
        self._start_action.setEnabled(not running and not self._stopping and not self._launched_at)
        self._stop_action.setEnabled(running and not self._stopping)
        for action in (self._copy_url, self._copy_key, self._new_key, self._remote):
            action.setEnabled(running)
        remote = self.status.remote if self.status is not None else RemoteStatus(enabled=False)
        self._remote.setChecked(remote.enabled)
        self._connect.setEnabled(remote.enabled)
        self._remote.setToolTip(
            f"{remote.url}\nSHA-256 {remote.fingerprint}" if remote.enabled else ""
        )

    def headline(self) -> str:
        if self.state is TrayState.STOPPED:
            return "localserve: stopped"
        if self.state is TrayState.STARTING:
            return "localserve: starting..."
        models = self.status.models if self.status is not None else []
        if self.state is TrayState.ERROR:
            troubled = [
                f"{m.model_id} {m.state}" for m in models if m.state in ("failed", "restarting")
            ]
            return f"localserve: {', '.join(troubled) or 'a model has a problem'}"
        return f"localserve: serving {', '.join(m.model_id for m in models)}"

    def tooltip(self) -> str:
        lines = [self.headline()]
        if self.status is not None:
            for model in self.status.models:
                if model.state == "failed" and model.last_error:
                    lines.append(model.last_error.splitlines()[0])  # not the log's tail
                if model.state == "ready" and model.info and model.info.backend:
                    lines.append(f"{model.model_id} on {model.info.backend}")
            remote = self.status.remote
            if remote.enabled:
                lines.append(f"Remote access on: {remote.url}")
            lines.append(describe_rate(self.stats))
            memory = describe_memory(self.stats)
            if memory:
                lines.append(memory)
        return "\n".join(lines)

    # -- menu ------------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        menu = self.menu
        self._header = menu.addAction("localserve")
        self._header.setEnabled(False)
        menu.addSeparator()
        self._start_action = menu.addAction("Start serving", self.start_serving)
        self._stop_action = menu.addAction("Stop serving", self.stop_serving)
        self.model_menu = menu.addMenu("Model")
        menu.addAction("Chat...", lambda: self.show_chat())
        menu.addAction("Download models...", self.show_models_window)
        menu.addAction("Dashboard", self.show_dashboard)
        menu.addAction("Cloud providers...", self.show_cloud_window)
        menu.addSeparator()
        self._copy_url = menu.addAction("Copy endpoint URL", self.copy_endpoint)
        self._copy_key = menu.addAction("Copy admin API key", self.copy_admin_key)
        self._new_key = menu.addAction("New API key for an app...", self.new_client_key)
        self._remote = menu.addAction("Remote access (TLS)")
        self._remote.setCheckable(True)
        self._remote.triggered.connect(self.set_remote_access)
        self._connect = menu.addAction("Connect a phone or laptop...", self.show_connect)
        menu.addSeparator()
        menu.addAction("Settings...", self.show_settings)
        menu.addAction("Open logs", self.open_logs)
        menu.addSeparator()
        menu.addAction("Quit", self.ask_quit)
        self._rebuild_model_menu()

    def _rebuild_model_menu(self) -> None:
        self.model_menu.clear()
        if not self.models:
            placeholder = self.model_menu.addAction("(start serving to list models)")
            placeholder.setEnabled(False)
            return
        for model in self.models:
            action = QAction(f"{model.name}  ({format_bytes(model.size_bytes)})", self)
            action.setCheckable(True)
            action.setChecked(model.state in ("ready", "starting", "restarting"))
            action.setData(model.name)
            action.triggered.connect(lambda _=False, name=model.name: self.switch_model(name))
            if model.fit.verdict == "too_large":
                action.setToolTip("Too large for this machine's free memory")
            self.model_menu.addAction(action)

    def model_actions(self) -> list[QAction]:
        return [a for a in self.model_menu.actions() if a.data()]

    # -- actions ---------------------------------------------------------------------------------
    def start_serving(self) -> None:
        if read_state(self.paths.state_file) is not None:
            return
        self._launch = start_daemon(self.paths)
        self._launched_at = time.monotonic()
        self._update_presentation()

    def stop_serving(self, then: Callable[[Any], None] | None = None) -> None:
        self._stopping = True
        self._update_presentation()

        def stopped(result: Any) -> None:
            self._stopping = False
            self.status = None
            self.poll()
            if then is not None:
                then(result)

        def failed(message: str) -> None:
            self._stopping = False
            self.report_error(message)

        self.background.run(lambda: stop_daemon(self.paths), stopped, failed)

    def switch_model(self, name: str) -> None:
        def failed(message: str) -> None:
            self.notify(f"Cannot load {name}", message)
            self.poll()

        self.call(
            lambda client: client.load_model(name, wait=False),
            lambda _: self.poll(),
            failed,
        )

    def set_remote_access(self, enabled: bool) -> None:
        """The menu's toggle: the daemon starts or stops its TLS listener."""

        def done(status: RemoteStatus) -> None:
            if status.enabled:
                self.notify(
                    "Remote access on",
                    f"{status.url}\nCertificate SHA-256: {status.fingerprint}",
                )
            self.poll()

        def failed(message: str) -> None:
            self.notify("Remote access", message)
            self.poll()

        def switch(client: DaemonClient) -> RemoteStatus:
            update_config_file(self.paths.config_file, remote_enabled=enabled)  # kept on restart
            return client.set_remote(enabled)

        self.call(switch, done, failed)

    def copy_endpoint(self) -> None:
        state = read_state(self.paths.state_file)
        if state is not None:
            QGuiApplication.clipboard().setText(f"{state.url}/v1")

    def copy_admin_key(self) -> None:
        self.background.run(
            lambda: KeyStore(self.paths).admin_key(),
            lambda key: QGuiApplication.clipboard().setText(key),
            self.report_error,
        )

    def new_client_key(self) -> None:
        name, accepted = QInputDialog.getText(
            None, "New API key", "Name of the app or device (e.g. zed, phone):"
        )
        if not accepted or not name.strip():
            return

        def copied(key: str) -> None:
            QGuiApplication.clipboard().setText(key)
            self.notify("API key copied", f"The key for '{name}' is on the clipboard.")

        self.background.run(
            lambda: KeyStore(self.paths).add_client_key(name.strip()), copied, self.report_error
        )

    def open_logs(self) -> None:
        self.paths.log_dir.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.paths.log_dir)))

    def show_models_window(self) -> None:
        from localserve.gui.windows.models import ModelsWindow

        self._show("models", lambda: ModelsWindow(self))

    def show_chat(self, model: str | None = None) -> None:
        """The chat window; with ``model``, ready to talk to that model."""
        from localserve.gui.windows.chat import ChatWindow

        window = self._show("chat", lambda: ChatWindow(self))
        if model:
            window.use_model(model)

    def show_dashboard(self) -> None:
        from localserve.gui.windows.dashboard import DashboardWindow

        self._show("dashboard", lambda: DashboardWindow(self))

    def show_connect(self) -> None:
        from localserve.gui.windows.connect import ConnectWindow

        self._show("connect", lambda: ConnectWindow(self)).refresh()

    def show_cloud_window(self) -> None:
        from localserve.gui.windows.cloud import CloudWindow

        self._show("cloud", lambda: CloudWindow(self))

    def show_settings(self) -> None:
        from localserve.gui.windows.settings import SettingsWindow

        self._show("settings", lambda: SettingsWindow(self))

    def _show(self, key: str, make: Callable[[], Any]) -> Any:
        window = self._open_windows.get(key)
        if window is None:
            window = self._open_windows[key] = make()
        window.show()
        window.raise_()
        window.activateWindow()
        return window

    def ask_quit(self) -> None:
        if self.status is None:
            self.quit(stop_serving=False)
            return
        answer = QMessageBox.question(
            None,
            "Quit localserve",
            "Stop serving models too? Editors and apps using localserve will lose it.",
            QMessageBox.StandardButton.Yes
            | QMessageBox.StandardButton.No
            | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Cancel:
            return
        self.quit(stop_serving=answer == QMessageBox.StandardButton.Yes)

    def quit(self, stop_serving: bool) -> None:
        app = QGuiApplication.instance()
        assert app is not None
        if stop_serving:
            self.stop_serving(then=lambda _: app.quit())
        else:
            app.quit()

    # -- messages --------------------------------------------------------------------------------
    def notify(self, title: str, message: str) -> None:
        self.notifications.append((title, message))
        self.tray.showMessage(title, message, icon("localserve"), 8000)

    def report_error(self, message: str) -> None:
        self.last_error = message
        self.notify("localserve", message)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.show_dashboard()
