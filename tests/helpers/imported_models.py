"""A real daemon with models imported into its library first, as ``localserve models import``
adds them: for the features a model's own files bring (a vision projector, a thinking or
tool-calling template), which the starter model alone does not have."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.daemon_process import DaemonProcess


@dataclass(frozen=True)
class ModelImport:
    """One model to import: its GGUF under ``name``, with its vision projector if it has one."""

    name: str
    path: Path
    mmproj: Path | None = None

    def cli_args(self) -> list[str]:
        args = ["models", "import", str(self.path), "--name", self.name]
        return [*args, "--mmproj", str(self.mmproj)] if self.mmproj is not None else args


def import_models(daemon: DaemonProcess, models: Iterable[ModelImport]) -> None:
    """Import ``models`` into ``daemon``'s library (it need not be running)."""
    for model in models:
        imported = daemon.cli(*model.cli_args())
        assert imported.returncode == 0, f"{model.name}: {imported.stderr}"


@contextlib.contextmanager
def daemon_with_models(
    home: Path, models: Iterable[ModelImport], env: dict[str, str] | None = None
) -> Iterator[DaemonProcess]:
    """A daemon for ``home`` with ``models`` imported before it starts, handed over once its
    default (starter) model is ready, and stopped after."""
    running = DaemonProcess(home, env=env)
    import_models(running, models)
    with running:
        running.wait_until_model("ready")
        yield running
