"""Desktop integration files: start-at-login items for each OS, the Linux menu entry, and
the packaging metadata that must agree with them."""

from __future__ import annotations

import configparser
import plistlib
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from localserve.desktop.autostart import (
    APP_ID,
    RUN_KEY,
    RUN_VALUE,
    LaunchAgent,
    RunKey,
    XdgAutostart,
    login_item,
    set_start_at_login,
    tray_command,
)
from localserve.desktop.linux import ICON_SIZES, install_desktop_entry, uninstall_desktop_entry
from localserve.errors import LocalserveError
from localserve.paths import resources_dir

ROOT = Path(__file__).resolve().parents[2]
COMMAND = ["/opt/local serve/localserve", "tray"]  # a space in the path, as on many Macs


def desktop_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return dict(parser["Desktop Entry"])


def test_xdg_autostart_is_written_only_when_on_and_removed_when_off(tmp_path: Path) -> None:
    item = XdgAutostart(tmp_path)
    assert not item.is_enabled() and not (tmp_path / "autostart").exists()
    item.enable(COMMAND)
    entry = desktop_entry(tmp_path / "autostart" / f"{APP_ID}.desktop")
    assert entry["Type"] == "Application" and entry["Icon"] == APP_ID
    assert shlex.split(entry["Exec"]) == COMMAND  # quoted as the Desktop Entry spec asks
    assert item.is_enabled()
    item.disable()
    item.disable()  # twice is fine
    assert not item.is_enabled() and list((tmp_path / "autostart").iterdir()) == []


def test_launch_agent_runs_the_tray_once_at_login(tmp_path: Path) -> None:
    item = LaunchAgent(tmp_path, launchctl=False)
    item.enable(COMMAND)
    agent = plistlib.loads((tmp_path / "Library" / "LaunchAgents" / f"{APP_ID}.plist").read_bytes())
    assert agent["Label"] == APP_ID and agent["ProgramArguments"] == COMMAND
    assert agent["RunAtLoad"] is True and "KeepAlive" not in agent  # Quit means quit
    item.disable()
    assert not item.is_enabled()


class FakeWinreg:
    """The part of ``winreg`` RunKey uses, over a dict: the registry cannot exist here."""

    HKEY_CURRENT_USER = "HKCU"
    REG_SZ = 1
    KEY_SET_VALUE = 2

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}
        self.keys = set()

    class Key:
        def __init__(self, path: str) -> None:
            self.path = path

        def __enter__(self) -> FakeWinreg.Key:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def CreateKey(self, root: str, path: str) -> Key:
        self.keys.add(path)
        return self.Key(path)

    def OpenKey(self, root: str, path: str, reserved: int = 0, access: int = 0) -> Key:
        if path not in self.keys:
            raise FileNotFoundError(path)
        return self.Key(path)

    def SetValueEx(self, key: Key, name: str, reserved: int, kind: int, value: str) -> None:
        self.values[(key.path, name)] = value

    def QueryValueEx(self, key: Key, name: str) -> tuple[str, int]:
        if (key.path, name) not in self.values:
            raise FileNotFoundError(name)
        return self.values[(key.path, name)], self.REG_SZ

    def DeleteValue(self, key: Key, name: str) -> None:
        if (key.path, name) not in self.values:
            raise FileNotFoundError(name)
        del self.values[(key.path, name)]


def test_windows_run_key_holds_one_quoted_command_line() -> None:
    registry = FakeWinreg()
    item = RunKey(registry)
    assert not item.is_enabled()
    item.enable(["C:\\Program Files\\localserve\\localserve.exe", "tray"])
    assert registry.values[(RUN_KEY, RUN_VALUE)] == (
        '"C:\\Program Files\\localserve\\localserve.exe" tray'
    )
    assert item.is_enabled()
    item.disable()
    item.disable()  # already off: no error
    assert not item.is_enabled() and registry.values == {}


def test_each_platform_gets_its_own_login_item(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    linux = login_item("linux", env)
    assert isinstance(linux, XdgAutostart) and linux.location().startswith(str(tmp_path / "xdg"))
    mac = login_item("darwin", env)
    assert isinstance(mac, LaunchAgent)
    assert mac.location() == str(tmp_path / "Library" / "LaunchAgents" / f"{APP_ID}.plist")
    assert isinstance(login_item("linux", {"HOME": str(tmp_path)}), XdgAutostart)


def test_start_at_login_runs_this_tray_and_reports_failures(tmp_path: Path) -> None:
    item = XdgAutostart(tmp_path)
    set_start_at_login(True, item)
    assert shlex.split(desktop_entry(Path(item.location()))["Exec"]) == tray_command()
    assert tray_command() == [sys.executable, "-m", "localserve", "tray"]  # not frozen here
    set_start_at_login(False, item)
    assert not item.is_enabled()
    blocked = XdgAutostart(tmp_path / "file")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LocalserveError, match="Could not change start at login"):
        set_start_at_login(True, blocked)


def test_the_menu_entry_metainfo_and_icons_install_and_uninstall(tmp_path: Path) -> None:
    written = install_desktop_entry(tmp_path, COMMAND)
    assert len(written) == 3 + len(ICON_SIZES)
    entry = desktop_entry(tmp_path / "applications" / f"{APP_ID}.desktop")
    assert shlex.split(entry["Exec"]) == COMMAND and entry["Icon"] == APP_ID
    assert "Development;" in entry["Categories"]
    for size in ICON_SIZES:
        png = tmp_path / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        header = png.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(header[16:20], "big") == size  # width in the IHDR chunk
    assert sorted(uninstall_desktop_entry(tmp_path)) == sorted(written)
    assert uninstall_desktop_entry(tmp_path) == []


def test_packaging_metadata_agrees_with_the_app() -> None:
    metainfo = ET.parse(resources_dir() / "linux" / f"{APP_ID}.metainfo.xml").getroot()
    assert metainfo.findtext("id") == APP_ID
    assert metainfo.findtext("launchable") == f"{APP_ID}.desktop"
    assert (resources_dir() / "linux" / f"{APP_ID}.desktop").is_file()
    info = plistlib.loads((ROOT / "packaging" / "macos" / "Info.plist").read_bytes())
    assert info["LSUIElement"] is True and info["CFBundleIdentifier"] == APP_ID
    installer = (ROOT / "packaging" / "windows" / "localserve.iss").read_text()
    assert f'Subkey: "{RUN_KEY}"' in installer and f'ValueName: "{RUN_VALUE}"' in installer
    assert "uninsdeletevalue" in installer and "Flags: unchecked" in installer  # opt-in
