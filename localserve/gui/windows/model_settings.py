"""A model's own settings (its preset), edited from the Models window ("Settings…").

Every key is optional: an empty field means "as the global setting". The dialog reads the
preset and writes the changes through the control API (``PUT /models/{name}/preset``) on a
worker thread, and says what happens next (the daemon reloads the model once idle after a
change to a load-time key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from localserve.api.control import ModelSettings
from localserve.api.presets import parse_assignments, validated_preset
from localserve.errors import ConfigError

if TYPE_CHECKING:
    from localserve.gui.tray import TrayController

DEFAULT = "(global setting)"
CHOICES = {
    "flash_attention": ["auto", "on", "off"],
    "cache_type_k": ["f16", "q8_0", "q4_0"],
    "cache_type_v": ["f16", "q8_0", "q4_0"],
}
LINE_KEYS = [
    "ctx",
    "gpu_layers",
    "threads",
    "parallel",
    "keep_alive",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "stop",
]
LABELS = {
    "ctx": "Context (tokens)",
    "gpu_layers": "GPU layers (auto or N)",
    "parallel": "Requests at once",
    "keep_alive": "Keep loaded (s)",
    "repeat_penalty": "Repeat penalty",
    "stop": "Stop strings (a, b)",
    "flash_attention": "Flash attention",
    "cache_type_k": "KV cache keys",
    "cache_type_v": "KV cache values",
}


def field_text(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "stop":
        return ", ".join(value)
    return str(value)


class ModelSettingsDialog(QDialog):
    def __init__(self, controller: TrayController, model: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.model = model
        self.setWindowTitle(f"Settings of {model}")
        self.lines: dict[str, QLineEdit] = {}
        self.choices: dict[str, QComboBox] = {}
        form = QFormLayout()
        for key in LINE_KEYS:
            edit = QLineEdit()
            edit.setPlaceholderText(DEFAULT)
            self.lines[key] = edit
            form.addRow(LABELS.get(key, key.replace("_", " ").capitalize()), edit)
        for key, options in CHOICES.items():
            box = QComboBox()
            box.addItems([DEFAULT, *options])
            self.choices[key] = box
            form.addRow(LABELS[key], box)
        self.system = QPlainTextEdit()
        self.system.setPlaceholderText("A system prompt for chats that bring none")
        self.system.setFixedHeight(70)
        form.addRow("System prompt", self.system)
        self.note = QLabel("Loading...")
        self.note.setWordWrap(True)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Close
        )
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addWidget(buttons)
        self.loaded: dict[str, Any] = {}
        controller.call(lambda c: c.model_preset(model), self.show_preset, self.show_problem)

    def show_preset(self, answer: ModelSettings) -> None:
        self.loaded = dict(answer.values)
        for key, edit in self.lines.items():
            edit.setText(field_text(key, self.loaded.get(key)))
        for key, box in self.choices.items():
            value = self.loaded.get(key)
            box.setCurrentText(str(value) if value else DEFAULT)
        self.system.setPlainText(self.loaded.get("system") or "")
        self.note.setText(
            "Empty fields follow the global settings; a request's own fields win over these."
        )
        self.save_button.setEnabled(True)

    def changes(self) -> dict[str, Any]:
        """What differs from the preset as loaded: new values, and None for cleared keys."""
        words = [f"{key}={edit.text().strip()}" for key, edit in self.lines.items()]
        values = parse_assignments(words)
        for key, box in self.choices.items():
            values[key] = None if box.currentText() == DEFAULT else box.currentText()
        values["system"] = self.system.toPlainText().strip() or None
        validated_preset({k: v for k, v in values.items() if v is not None}, self.model)
        return {key: value for key, value in values.items() if self.loaded.get(key) != value}

    def save(self) -> None:
        try:
            changes = self.changes()
        except ConfigError as exc:
            self.show_problem(str(exc).splitlines()[0])
            return
        if not changes:
            self.note.setText("Nothing changed.")
            return
        self.save_button.setEnabled(False)
        self.note.setText("Saving...")
        self.controller.call(
            lambda c: c.change_preset(self.model, changes), self.saved, self.show_problem
        )

    def saved(self, answer: ModelSettings) -> None:
        self.loaded = dict(answer.values)
        self.save_button.setEnabled(True)
        self.note.setText(f"Saved: {', '.join(answer.changed) or 'nothing'}. {answer.applies}")

    def show_problem(self, message: str) -> None:
        self.save_button.setEnabled(bool(self.loaded) or self.save_button.isEnabled())
        self.note.setText(f"⚠ {message}")
