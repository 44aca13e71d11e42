"""``localserve autostart`` and ``localserve desktop``: start at login, and the Linux menu entry."""

from __future__ import annotations

import sys

import click

from localserve.desktop.autostart import login_item, set_start_at_login
from localserve.errors import LocalserveError


@click.command()
@click.argument("switch", required=False, type=click.Choice(["on", "off"]))
def autostart(switch: str | None) -> None:
    """Start the tray when you log in: `on`, `off`, or no argument to see which."""
    item = login_item()
    if switch is not None:
        set_start_at_login(switch == "on", item)
    if item.is_enabled():
        click.echo(f"Start at login is on ({item.location()}).")
    else:
        click.echo("Start at login is off.")


@click.group()
def desktop() -> None:
    """The menu entry and icons of an app unpacked from the Linux tarball."""


def _linux_only() -> None:
    if not sys.platform.startswith("linux"):
        raise LocalserveError("Menu entries are installed by the macOS and Windows installers.")


@desktop.command("install")
def desktop_install() -> None:
    """Add localserve to the applications menu (files under ~/.local/share)."""
    from localserve.desktop.linux import data_home, install_desktop_entry

    _linux_only()
    written = install_desktop_entry(data_home())
    click.echo(f"Installed the menu entry and {len(written) - 2} icons under {data_home()}.")


@desktop.command("uninstall")
def desktop_uninstall() -> None:
    """Remove the menu entry and icons that `desktop install` added."""
    from localserve.desktop.linux import data_home, uninstall_desktop_entry

    _linux_only()
    removed = uninstall_desktop_entry(data_home())
    click.echo(f"Removed {len(removed)} files." if removed else "Nothing was installed.")
