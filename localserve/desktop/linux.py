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


def _install_plan(data: Path) -> dict[Path, Path | None]:
    """Each file ``install`` writes, and the resource it copies (None: the menu entry, written
    from its template with ``Exec=`` filled in)."""
    resources = resources_dir()
    icons = data / "icons" / "hicolor"
    metainfo = f"{APP_ID}.metainfo.xml"
    plan: dict[Path, Path | None] = {
        data / "applications" / f"{APP_ID}.desktop": None,
        data / "metainfo" / metainfo: resources / "linux" / metainfo,
        icons / "scalable" / "apps" / f"{APP_ID}.svg": resources / "icons" / "localserve.svg",
    }
    for size in ICON_SIZES:
        png = f"{size}x{size}/apps/{APP_ID}.png"
        plan[icons / png] = resources / "icons" / "hicolor" / png
    return plan


def installed_files(data: Path) -> list[Path]:
    """Every file ``install`` writes (and ``uninstall`` removes)."""
    return list(_install_plan(data))


def install_desktop_entry(data: Path, command: list[str] | None = None) -> list[Path]:
    """Install the menu entry, metainfo and icons; the files written."""
    template = resources_dir() / "linux" / f"{APP_ID}.desktop"
    exec_line = f"Exec={desktop_exec(command or tray_command())}"
    written = []
    try:
        entry = template.read_text(encoding="utf-8").replace("Exec=localserve tray", exec_line)
        for target, source in _install_plan(data).items():
            target.parent.mkdir(parents=True, exist_ok=True)
            if source is None:
                target.write_text(entry, encoding="utf-8")
            else:
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
