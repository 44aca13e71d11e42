"""The Linux menu entry, AppStream metadata and icons for an app unpacked from the tarball.

``localserve desktop install`` copies them under ``$XDG_DATA_HOME`` (``~/.local/share``) with
``Exec=`` pointing at this executable; ``localserve desktop uninstall`` removes exactly those
files. Distribution packages would install the same files under /usr/share instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from localserve.desktop.autostart import APP_ID, desktop_exec, tray_command
from localserve.errors import LocalserveError
from localserve.paths import resources_dir

ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)


def data_home(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("XDG_DATA_HOME") or Path(env.get("HOME") or Path.home()) / ".local/share")


def installed_files(data: Path) -> list[Path]:
    """Every file ``install`` writes (and ``uninstall`` removes)."""
    icons = data / "icons" / "hicolor"
    return [
        data / "applications" / f"{APP_ID}.desktop",
        data / "metainfo" / f"{APP_ID}.metainfo.xml",
        icons / "scalable" / "apps" / f"{APP_ID}.svg",
        *(icons / f"{n}x{n}" / "apps" / f"{APP_ID}.png" for n in ICON_SIZES),
    ]


def install_desktop_entry(data: Path, command: list[str] | None = None) -> list[Path]:
    """Install the menu entry, metainfo and icons; the files written."""
    resources = resources_dir()
    entry = (resources / "linux" / f"{APP_ID}.desktop").read_text(encoding="utf-8")
    entry = entry.replace("Exec=localserve tray", f"Exec={desktop_exec(command or tray_command())}")
    written = []
    try:
        for target in installed_files(data):
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.name.endswith(".desktop"):
                target.write_text(entry, encoding="utf-8")
            elif target.name.endswith(".metainfo.xml"):
                shutil.copyfile(resources / "linux" / target.name, target)
            elif target.suffix == ".svg":
                shutil.copyfile(resources / "icons" / "localserve.svg", target)
            else:
                size = target.parent.parent.name
                source = resources / "icons" / "hicolor" / size / "apps" / target.name
                if not source.is_file():
                    continue  # a checkout without rendered PNGs: the SVG serves every size
                shutil.copyfile(source, target)
            written.append(target)
    except OSError as exc:
        raise LocalserveError(f"Could not install the menu entry: {exc}") from exc
    return written


def uninstall_desktop_entry(data: Path) -> list[Path]:
    """Remove what ``install_desktop_entry`` wrote; the files removed."""
    removed = []
    for target in installed_files(data):
        if target.is_file():
            target.unlink()
            removed.append(target)
    return removed
