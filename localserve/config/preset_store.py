"""The presets in effect while the daemon runs, and changing them (``presets.py`` says what a
preset holds)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localserve.api.presets import ModelPreset, validated_preset
from localserve.config.settings import read_config_file, write_config_file

PRESETS_KEY = "models"  # the config.toml table that holds them


class PresetStore:
    """The presets in effect, and changing them: written to config.toml (the other settings
    in it kept) and then told to ``on_change`` (the daemon reloads an idle model)."""

    def __init__(
        self,
        config_file: Path | None,
        presets: dict[str, ModelPreset] | None = None,
        on_change: Callable[[str, set[str]], None] | None = None,
    ) -> None:
        self.config_file = config_file  # None: kept in memory only (tests)
        self._presets = {name.strip().lower(): preset for name, preset in (presets or {}).items()}
        self._lock = threading.Lock()
        self.on_change = on_change

    def get(self, model: str) -> ModelPreset | None:
        return self._presets.get(model.strip().lower())

    def all(self) -> dict[str, ModelPreset]:
        return dict(self._presets)

    def update(self, model: str, changes: dict[str, Any]) -> tuple[ModelPreset, set[str]]:
        """Set (a value) or remove (None) keys of ``model``'s preset; the new preset and the
        keys that changed. ConfigError, changing nothing, for a value out of range."""
        name = model.strip().lower()
        with self._lock:
            old = self._presets.get(name) or ModelPreset()
            merged = {**old.values(), **changes}
            merged = {key: value for key, value in merged.items() if value is not None}
            preset = validated_preset(merged, name)
            changed = {
                key
                for key in set(old.values()) | set(preset.values())
                if old.values().get(key) != preset.values().get(key)
            }
            if self.config_file is not None:
                self._write(name, preset)
            self._presets[name] = preset
        if changed and self.on_change is not None:
            self.on_change(name, changed)
        return preset, changed

    def _write(self, name: str, preset: ModelPreset) -> None:
        assert self.config_file is not None
        stored = read_config_file(self.config_file)
        tables = dict(stored.get(PRESETS_KEY) or {})
        if preset.values():
            tables[name] = preset.values()
        else:
            tables.pop(name, None)
        if tables:
            stored[PRESETS_KEY] = tables
        else:
            stored.pop(PRESETS_KEY, None)
        write_config_file(self.config_file, stored)
