"""Models window: search the Hub, see a repo's quants with fit badges, download with progress
(cancel and resume), and manage installed models. Downloads run in the daemon, so closing this
window never stops them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from localserve.api.control import (
    FitSummary,
    HubQuant,
    HubRepo,
    LibraryModel,
    PullSnapshot,
    PullState,
    feature_words,
)
from localserve.gui.icons import icon
from localserve.gui.windows.model_settings import ModelSettingsDialog
from localserve.units import format_bytes

if TYPE_CHECKING:
    from localserve.gui.tray import TrayController

BADGES = {
    "gpu": ("GPU", "#16a34a"),
    "partial": ("partial", "#ca8a04"),
    "cpu": ("CPU", "#2563eb"),
    "too_large": ("too large", "#dc2626"),
}
PULL_POLL_MS = 500
PULL_STATE_LABELS = {PullState.WAITING: "waiting for network"}


def badge_item(fit: FitSummary | None) -> QTableWidgetItem:
    if fit is None:
        item = QTableWidgetItem("unknown")
        item.setToolTip("The model's header could not be read; no estimate.")
        return item
    text, color = BADGES.get(fit.verdict, (fit.verdict, "#6b7280"))
    if fit.verdict == "partial":
        text = f"partial ({fit.gpu_layers} layers on GPU)"
    item = QTableWidgetItem(f"  {text}  ")
    item.setForeground(QColor("#ffffff"))
    item.setBackground(QColor(color))
    item.setToolTip(f"{fit.description}: needs about {format_bytes(fit.total_bytes)}")
    return item


def table(headers: list[str], stretch: int) -> QTableWidget:
    """A read-only table; column ``stretch`` takes the spare width, the others fit their text."""
    widget = QTableWidget(0, len(headers))
    widget.setHorizontalHeaderLabels(headers)
    widget.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    widget.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    widget.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    widget.verticalHeader().setVisible(False)
    header = widget.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    return widget


def features(model: LibraryModel) -> str:
    """What an installed model can do beyond chat, in a few words ("sees, tools")."""
    return feature_words(list(model.capabilities))


class ModelsWindow(QWidget):
    def __init__(self, controller: TrayController) -> None:
        super().__init__()
        self.controller = controller
        self.setWindowTitle("localserve: models")
        self.setWindowIcon(icon("localserve"))
        self.resize(1100, 680)
        self.repos: list[HubRepo] = []
        self.quants: list[HubQuant] = []
        self.progress_bars: dict[str, QProgressBar] = {}

        self.query = QLineEdit()
        self.query.setPlaceholderText(
            "Search GGUF models on the Hugging Face Hub (e.g. qwen2.5-coder)"
        )
        self.query.returnPressed.connect(self.search)
        search_button = QPushButton("Search")
        search_button.clicked.connect(self.search)
        self.status_label = QLabel("")
        self.repo_table = table(["Repository", "Downloads", "Likes", "Updated"], stretch=0)
        self.repo_table.itemSelectionChanged.connect(self.show_repo)
        self.quant_table = table(["Quant", "File", "Size", "Needs", "Fit", ""], stretch=1)
        self.download_table = table(["Download", "Progress", "Rate", ""], stretch=1)
        self.installed_table = table(
            ["Installed model", "Size", "Quant", "Context", "Can", "Fit", "State", ""], stretch=0
        )

        top = QHBoxLayout()
        top.addWidget(self.query)
        top.addWidget(search_button)
        hub_box = QGroupBox("Hugging Face Hub")
        hub_layout = QVBoxLayout(hub_box)
        hub_layout.addLayout(top)
        hub_layout.addWidget(self.status_label)
        lists = QHBoxLayout()
        lists.addWidget(self.repo_table, 1)
        lists.addWidget(self.quant_table, 1)
        hub_layout.addLayout(lists)
        downloads_box = QGroupBox("Downloads (they continue when this window is closed)")
        QVBoxLayout(downloads_box).addWidget(self.download_table)
        installed_box = QGroupBox("Installed")
        installed_layout = QVBoxLayout(installed_box)
        installed_layout.addWidget(self.installed_table)
        self.chat_button = QPushButton("Chat with the selected model")
        self.chat_button.setEnabled(False)
        self.chat_button.clicked.connect(self.chat_with_selected)
        self.settings_button = QPushButton("Settings...")
        self.settings_button.setToolTip("This model's own settings (its preset)")
        self.settings_button.setEnabled(False)
        self.settings_button.clicked.connect(self.settings_of_selected)
        self.installed_table.itemSelectionChanged.connect(self.selection_changed)
        self.installed_table.itemDoubleClicked.connect(lambda _item: self.chat_with_selected())
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.settings_button)
        buttons.addWidget(self.chat_button)
        installed_layout.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(hub_box, 3)
        layout.addWidget(downloads_box, 1)
        layout.addWidget(installed_box, 2)

        controller.models_changed.connect(self.show_installed)
        self.show_installed()
        self._pull_timer = QTimer(self)
        self._pull_timer.setInterval(PULL_POLL_MS)
        self._pull_timer.timeout.connect(self.refresh_pulls)
        self._refreshing = False

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._pull_timer.start()
        self.refresh_pulls()

    def hideEvent(self, event: Any) -> None:
        super().hideEvent(event)
        self._pull_timer.stop()

    # -- the Hub -------------------------------------------------------------------------------
    def search(self) -> None:
        query = self.query.text().strip()
        if not query:
            return
        self.status_label.setText(f"Searching for '{query}'...")
        self.controller.call(
            lambda c: c.hub_search(query, limit=50),
            self.show_repos,
            self.show_problem,
            timeout=30.0,
        )

    def show_repos(self, repos: list[HubRepo]) -> None:
        self.repos = repos
        self.status_label.setText(f"{len(repos)} repositories" if repos else "Nothing found.")
        self.repo_table.setRowCount(len(repos))
        for row, repo in enumerate(repos):
            updated = (repo.updated or "")[:10]
            for column, text in enumerate(
                [repo.repo_id, f"{repo.downloads:,}", str(repo.likes), updated]
            ):
                self.repo_table.setItem(row, column, QTableWidgetItem(text))

    def show_repo(self) -> None:
        rows = self.repo_table.selectionModel().selectedRows()
        if not rows:
            return
        repo = self.repos[rows[0].row()].repo_id
        self.status_label.setText(f"Reading {repo} (file list and model header)...")
        self.controller.call(
            lambda c: c.hub_files(repo),
            self.show_quants,
            self.show_problem,
            timeout=60.0,
        )

    def show_quants(self, quants: list[HubQuant]) -> None:
        self.quants = quants
        count = f"{len(quants)} quant{'s' if len(quants) != 1 else ''}"
        self.status_label.setText(
            f"{count}; the fit is estimated for the memory free on this machine now."
        )
        self.quant_table.setRowCount(len(quants))
        for row, quant in enumerate(quants):
            fit = quant.fit
            shards = f" (+{len(quant.files) - 1} shards)" if len(quant.files) > 1 else ""
            cells = [
                quant.quant,
                quant.files[0] + shards,
                format_bytes(quant.size_bytes),
                format_bytes(fit.total_bytes) if fit else "?",
            ]
            for column, text in enumerate(cells):
                self.quant_table.setItem(row, column, QTableWidgetItem(text))
            self.quant_table.setItem(row, 4, badge_item(fit))
            button = QPushButton("Download")
            button.clicked.connect(lambda _=False, q=quant: self.download(q))
            self.quant_table.setCellWidget(row, 5, button)

    def show_problem(self, message: str) -> None:
        self.status_label.setText(message)

    # -- downloads -----------------------------------------------------------------------------
    def download(self, quant: HubQuant) -> None:
        spec = f"{quant.repo_id}:{quant.files[0]}"
        self.controller.call(
            lambda c: c.start_pull(spec),
            lambda _: self.refresh_pulls(),
            self.show_problem,
            timeout=60.0,
        )

    def refresh_pulls(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True

        def done(jobs: list[PullSnapshot]) -> None:
            self._refreshing = False
            self.show_pulls(jobs)

        def failed(message: str) -> None:
            self._refreshing = False

        self.controller.call(lambda c: c.pulls(), done, failed)

    def show_pulls(self, jobs: list[PullSnapshot]) -> None:
        self.download_table.setRowCount(len(jobs))
        self.progress_bars = {}
        for row, job in enumerate(jobs):
            self.download_table.setItem(row, 0, QTableWidgetItem(f"{job.repo_id} / {job.files[0]}"))
            bar = QProgressBar()
            bar.setRange(0, 1000)
            total = job.total_bytes or 1
            bar.setValue(int(job.done_bytes * 1000 / total))
            state = PULL_STATE_LABELS.get(job.state, job.state.value)
            bar.setFormat(f"{state}: {format_bytes(job.done_bytes)} of {format_bytes(total)}")
            if job.error and job.state is PullState.FAILED:
                bar.setToolTip(job.error)
            elif job.waiting_reason:
                bar.setToolTip(job.waiting_reason)
            self.progress_bars[job.id] = bar
            self.download_table.setCellWidget(row, 1, bar)
            rate = ""
            if job.state is PullState.RUNNING:
                eta = job.eta_seconds
                rate = f"{format_bytes(job.bytes_per_second)}/s"
                rate += f", {eta:.0f} s left" if eta is not None else ""
            elif job.state is PullState.WAITING:
                rate = "retrying by itself"
            rate_item = QTableWidgetItem(rate)
            rate_item.setToolTip(job.waiting_reason or rate)
            self.download_table.setItem(row, 2, rate_item)
            if job.active:
                button = QPushButton("Cancel")
                button.clicked.connect(lambda _=False, j=job: self.cancel(j))
            elif job.state in (PullState.CANCELLED, PullState.FAILED):
                button = QPushButton("Resume")
                button.clicked.connect(lambda _=False, j=job: self.resume(j))
            else:
                button = None
            if button is not None:
                self.download_table.setCellWidget(row, 3, button)
            else:
                self.download_table.removeCellWidget(row, 3)

    def cancel(self, job: PullSnapshot) -> None:
        self.controller.call(lambda c: c.cancel_pull(job.id), lambda _: None)

    def resume(self, job: PullSnapshot) -> None:
        spec = f"{job.repo_id}:{job.files[0]}"
        self.controller.call(
            lambda c: c.start_pull(spec),
            lambda _: self.refresh_pulls(),
            self.show_problem,
        )

    # -- installed -----------------------------------------------------------------------------
    def show_installed(self) -> None:
        models = self.controller.models
        self.installed_table.setRowCount(len(models))
        for row, model in enumerate(models):
            cells = [
                model.name,
                format_bytes(model.size_bytes),
                model.quant_type,
                str(model.context_length),
                features(model),
            ]
            for column, text in enumerate(cells):
                self.installed_table.setItem(row, column, QTableWidgetItem(text))
            self.installed_table.setItem(row, 5, badge_item(model.fit))
            self.installed_table.setItem(row, 6, QTableWidgetItem(model.state))
            removable = not model.default and "package" not in (model.source_repo or "")
            if removable:
                button = QPushButton("Remove")
                button.clicked.connect(lambda _=False, m=model: self.remove(m))
                self.installed_table.setCellWidget(row, 7, button)
            else:
                self.installed_table.removeCellWidget(row, 6)

    def selected_installed(self) -> str | None:
        rows = self.installed_table.selectionModel().selectedRows()
        item = self.installed_table.item(rows[0].row(), 0) if rows else None
        return item.text() if item is not None else None

    def selection_changed(self) -> None:
        chosen = self.selected_installed() is not None
        self.chat_button.setEnabled(chosen)
        self.settings_button.setEnabled(chosen)

    def settings_of_selected(self) -> None:
        model = self.selected_installed()
        if model is not None:
            self.settings_dialog = ModelSettingsDialog(self.controller, model, self)
            self.settings_dialog.show()

    def chat_with_selected(self) -> None:
        model = self.selected_installed()
        if model is not None:
            self.controller.show_chat(model)

    def remove(self, model: LibraryModel) -> None:
        answer = QMessageBox.question(
            self,
            "Remove model",
            f"Remove {model.name} ({format_bytes(model.size_bytes)}) from the library?",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.controller.call(
            lambda c: c.remove_model(model.name),
            lambda _: self.controller.poll(),
            self.show_problem,
        )
