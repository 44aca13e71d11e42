"""Start the tray at login, opt-in and reversible: one small file or registry value per OS.

- Linux (XDG): ``$XDG_CONFIG_HOME/autostart/io.github.localserve.LocalServe.desktop``
- macOS: ``~/Library/LaunchAgents/io.github.localserve.LocalServe.plist`` (a LaunchAgent that
  runs once at login; the tray then keeps itself in the menu bar)
- Windows: the ``localserve`` value of the ``HKCU`` key ``RUN_KEY`` below

Each is written only when the user turns it on (Settings, or ``localserve autostart on``) and
removed when turned off; nothing else is touched.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from localserve.errors import LocalserveError
from localserve.program import localserve_command

APP_ID = "io.github.localserve.LocalServe"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "localserve"


def tray_command() -> list[str]:
    """What starts the tray: the app itself when packaged, this Python otherwise."""
    return [*localserve_command(), "tray"]


class LoginItem(Protocol):
    """Where this OS keeps programs to start at login."""

    def location(self) -> str: ...

    def is_enabled(self) -> bool: ...

    def enable(self, command: list[str]) -> None: ...

    def disable(self) -> None: ...


def desktop_exec(command: list[str]) -> str:
    """An Exec= line: arguments quoted as the Desktop Entry spec asks (and % doubled)."""

    def quote(argument: str) -> str:
        if argument and all(c.isalnum() or c in "-_./:=+," for c in argument):
            return argument.replace("%", "%%")
        escaped = argument.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
        return '"' + escaped.replace("$", "\\$").replace("%", "%%") + '"'

    return " ".join(quote(argument) for argument in command)


class XdgAutostart:
    def __init__(self, config_home: Path) -> None:
        self.path = config_home / "autostart" / f"{APP_ID}.desktop"

    def location(self) -> str:
        return str(self.path)

    def is_enabled(self) -> bool:
        return self.path.is_file()

    def enable(self, command: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            "[Desktop Entry]\n"
            "Type=Application\n"
            "Name=localserve\n"
            "Comment=Serve local LLMs as an authenticated OpenAI-compatible API\n"
            f"Exec={desktop_exec(command)}\n"
            f"Icon={APP_ID}\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n",
            encoding="utf-8",
        )

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)


class LaunchAgent:
    def __init__(self, home: Path, launchctl: bool = True) -> None:
        self.path = home / "Library" / "LaunchAgents" / f"{APP_ID}.plist"
        self.launchctl = launchctl  # tests write the file without telling launchd

    def location(self) -> str:
        return str(self.path)

    def is_enabled(self) -> bool:
        return self.path.is_file()

    def enable(self, command: list[str]) -> None:
        agent = {
            "Label": APP_ID,
            "ProgramArguments": command,
            "RunAtLoad": True,  # once at login; no KeepAlive: Quit in the menu means quit
            "ProcessType": "Interactive",
            "LimitLoadToSessionType": "Aqua",  # the GUI session, not ssh logins
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(plistlib.dumps(agent))

    def disable(self) -> None:
        if self.launchctl and self.path.is_file():
            # Unload it so launchd forgets it now, not only at the next login.
            subprocess.run(["launchctl", "unload", str(self.path)], capture_output=True)
        self.path.unlink(missing_ok=True)


class RunKey:
    """The Windows Run key, through ``winreg`` (passed in, so other OSes can test it)."""

    def __init__(self, winreg: Any) -> None:
        self.winreg = winreg

    def location(self) -> str:
        return f"HKEY_CURRENT_USER\\{RUN_KEY} ({RUN_VALUE})"

    def is_enabled(self) -> bool:
        try:
            with self.winreg.OpenKey(self.winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                self.winreg.QueryValueEx(key, RUN_VALUE)
                return True
        except OSError:
            return False

    def enable(self, command: list[str]) -> None:
        line = subprocess.list2cmdline(command)
        with self.winreg.CreateKey(self.winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            self.winreg.SetValueEx(key, RUN_VALUE, 0, self.winreg.REG_SZ, line)

    def disable(self) -> None:
        try:
            with self.winreg.OpenKey(
                self.winreg.HKEY_CURRENT_USER, RUN_KEY, 0, self.winreg.KEY_SET_VALUE
            ) as key:
                self.winreg.DeleteValue(key, RUN_VALUE)
        except FileNotFoundError:
            pass  # already off


def login_item(platform: str = sys.platform, environ: dict[str, str] | None = None) -> LoginItem:
    """This OS's login item."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    if platform == "darwin":
        return LaunchAgent(home)
    if platform == "win32":
        import winreg  # type: ignore[import-not-found,unused-ignore]

        return RunKey(winreg)
    return XdgAutostart(Path(env.get("XDG_CONFIG_HOME") or home / ".config"))


def set_start_at_login(enabled: bool, item: LoginItem | None = None) -> LoginItem:
    """Turn start-at-login on or off; LocalserveError (one line) when the OS refuses."""
    item = item or login_item()
    try:
        if enabled:
            item.enable(tray_command())
        else:
            item.disable()
    except OSError as exc:
        raise LocalserveError(
            f"Could not change start at login ({item.location()}): {exc.strerror or exc}"
        ) from exc
    return item
