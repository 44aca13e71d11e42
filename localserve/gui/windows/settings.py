"""Settings: the common settings of ``config.toml``, checked with the same typed Settings object
as the daemon before they are saved. The daemon reads them when it (re)starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from PySide6.QtWidgets import (
    QCheckBox,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from localserve.config.settings import Settings, read_config_file, write_config_file
from localserve.desktop.autostart import login_item, set_start_at_login
from localserve.errors import ConfigError, LocalserveError
from localserve.gui.icons import icon

if TYPE_CHECKING:
    from localserve.gui.tray import TrayController


def spin(low: int, high: int, value: int, special: str | None = None) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    if special:
        box.setSpecialValueText(special)
    return box


class SettingsWindow(QWidget):
    def __init__(self, controller: TrayController) -> None:
        super().__init__()
        self.controller = controller
        self.setWindowTitle("localserve: settings")
        self.setWindowIcon(icon("localserve"))
        config_file = controller.paths.config_file
        self.problem: str | None = None
        try:
            self.stored = read_config_file(config_file)
        except ConfigError as exc:
            # Start from the defaults; saving keeps the broken file as config.toml.corrupt.
            self.stored = {}
            self.problem = f"{exc} Saving replaces it; the broken file is kept beside it."
        # The file's values over the defaults; environment overrides are not the file's to keep.
        current = Settings.model_construct(**self.stored)
        self.port = spin(0, 65535, current.port)
        self.ctx = spin(0, 1_048_576, current.ctx, "model's training length")
        self.ctx.setSingleStep(1024)
        self.gpu_layers = QLineEdit(str(current.gpu_layers))
        self.gpu_layers.setToolTip("'auto', or a number of layers (0 = CPU only)")
        self.threads = spin(0, 256, current.threads or 0, "auto (physical cores)")
        self.parallel = spin(0, 64, current.parallel or 0, "auto")
        self.max_loaded = spin(1, 16, current.max_loaded_models)
        # keep_alive in minutes here; -1 (the spin box's lowest value) keeps models loaded.
        minutes = -1 if current.keep_alive < 0 else round(current.keep_alive / 60)
        self.idle_unload = spin(-1, 24 * 60, minutes, "never")
        self.idle_unload.setToolTip("0 = unload right after each request")
        # Start at login is not a setting in config.toml: the OS's own login item is the truth.
        self.login_item = login_item()
        self.start_at_login = QCheckBox("Start at login")
        self.start_at_login.setChecked(self.login_item.is_enabled())
        self.start_at_login.setToolTip(self.login_item.location())
        self.local_only = QCheckBox("Local only: never forward requests to a cloud provider")
        self.local_only.setChecked(bool(current.local_only))

        form = QFormLayout()
        form.addRow("Port", self.port)
        form.addRow("Context size (tokens)", self.ctx)
        form.addRow("GPU layers", self.gpu_layers)
        form.addRow("Threads", self.threads)
        form.addRow("Parallel requests per model", self.parallel)
        form.addRow("Models loaded at once", self.max_loaded)
        form.addRow("Unload a model idle for (minutes)", self.idle_unload)
        form.addRow(self.start_at_login)
        form.addRow(self.local_only)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Close
        )
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        if self.problem:
            warning = QLabel(self.problem)
            warning.setWordWrap(True)
            warning.setStyleSheet("color: #b00020")
            layout.addWidget(warning)
        layout.addLayout(form)
        layout.addWidget(QLabel(f"Saved to {config_file}; applied when serving restarts."))
        layout.addWidget(buttons)

    def values(self) -> dict[str, Any]:
        values = dict(self.stored)
        values.update(
            port=self.port.value(),
            ctx=self.ctx.value(),
            gpu_layers=self.gpu_layers.text().strip() or "auto",
            max_loaded_models=self.max_loaded.value(),
            local_only=self.local_only.isChecked(),
            keep_alive=-1.0 if self.idle_unload.value() < 0 else self.idle_unload.value() * 60.0,
        )
        for key, box in (("threads", self.threads), ("parallel", self.parallel)):
            if box.value():
                values[key] = box.value()
            else:
                values.pop(key, None)
        return values

    def save(self) -> bool:
        values = self.values()
        try:
            checked = Settings(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            QMessageBox.warning(self, "Invalid setting", f"{where}: {first['msg']}")
            return False
        if checked.gpu_layers != "auto":
            values["gpu_layers"] = checked.gpu_layers
        write_config_file(self.controller.paths.config_file, values)
        if self.start_at_login.isChecked() != self.login_item.is_enabled():
            try:
                set_start_at_login(self.start_at_login.isChecked(), self.login_item)
            except LocalserveError as exc:
                QMessageBox.warning(self, "Start at login", str(exc))
        self.stored = values
        if self.controller.status is not None:
            # Local-only applies at once; the rest when serving restarts.
            enabled = checked.local_only
            self.controller.call(lambda c: c.set_local_only(enabled))
            answer = QMessageBox.question(
                self, "Settings saved", "Restart serving now to apply them?"
            )
            if answer == QMessageBox.StandardButton.Yes:
                self.controller.stop_serving(then=lambda _: self.controller.start_serving())
        return True
