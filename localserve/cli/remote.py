"""``localserve remote on|off|status``: reach this server from other devices, over TLS only."""

from __future__ import annotations

import click

from localserve.api.control import RemoteStatus
from localserve.config.settings import read_config_file, update_config_file
from localserve.daemon.client import DaemonClient
from localserve.paths import app_paths


def describe(status: RemoteStatus) -> str:
    if not status.enabled:
        return "Remote access is off: localserve listens on loopback only."
    kind = "self-signed" if status.self_signed else "your certificate"
    return (
        f"Remote access is on at {status.url} (TLS, {kind}).\n"
        f"  SHA-256 fingerprint: {status.fingerprint}\n"
        f"  Certificate: {status.cert_file}\n"
        "  Remote clients need a client key (`localserve key add phone`); the admin key is\n"
        "  refused remotely. Pin the fingerprint, or trust the certificate file, in the client."
    )


@click.group()
def remote() -> None:
    """Reach localserve from other devices (TLS and per-device keys)."""


@remote.command("on")
@click.option("--interface", metavar="NAME|ADDR", help="Interface or address (default: LAN).")
@click.option("--port", type=int, help="TCP port (default: the remote_port setting, 11436).")
def remote_on(interface: str | None, port: int | None) -> None:
    """Listen on the network too, TLS only; saved, so serving starts with it next time."""
    paths = app_paths().ensure()
    update_config_file(
        paths.config_file, remote_enabled=True, remote_address=interface, remote_port=port
    )
    client = DaemonClient.connect_if_running(paths)
    if client is None:
        click.echo("Saved: remote access starts with `localserve serve` (not running now).")
        return
    with client:
        status = client.set_remote(True, interface, port)
    click.echo(describe(status))


@remote.command("off")
def remote_off() -> None:
    """Back to loopback only; remote connections are closed."""
    paths = app_paths().ensure()
    update_config_file(paths.config_file, remote_enabled=False)
    client = DaemonClient.connect_if_running(paths)
    if client is not None:
        with client:
            client.set_remote(False)
    click.echo("Remote access is off: localserve listens on loopback only.")


@remote.command("status")
def remote_status() -> None:
    """Whether remote access is on, its URL and the certificate fingerprint."""
    paths = app_paths().ensure()
    client = DaemonClient.connect_if_running(paths)
    if client is None:
        saved = read_config_file(paths.config_file).get("remote_enabled", False)
        state = "on" if saved else "off"
        click.echo(f"localserve is not running; remote access is set {state} for its next start.")
        return
    with client:
        click.echo(describe(client.remote()))
