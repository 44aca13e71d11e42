"""The ``localserve`` command: parses arguments and calls the core; errors become one line."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import click
import psutil
import tomli_w

from localserve import __version__
from localserve.client import DaemonClient
from localserve.config import Settings, load_settings
from localserve.daemon.state import DaemonState, is_alive, read_state
from localserve.errors import DaemonNotRunningError, LocalserveError
from localserve.paths import AppPaths, app_paths
from localserve.security.keys import KeyStore

FIELDS = Settings.model_fields


def describe(name: str) -> str:
    return FIELDS[name].description or ""


class LocalserveGroup(click.Group):
    """Turns every LocalserveError into one readable line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LocalserveError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


def current_paths() -> AppPaths:
    return app_paths().ensure()


@click.group(cls=LocalserveGroup, invoke_without_command=True)
@click.version_option(__version__, prog_name="localserve")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """localserve: your own models as an authenticated, OpenAI-compatible API on localhost."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command()
@click.option("--model", "-m", metavar="NAME|PATH", help=describe("model"))
@click.option("--host", metavar="ADDR", help=describe("host"))
@click.option("--port", "-p", type=int, help=describe("port"))
@click.option("--ctx", type=int, help=describe("ctx"))
@click.option("--gpu-layers", metavar="auto|N", help=describe("gpu_layers"))
@click.option("--threads", type=int, help=describe("threads"))
@click.option("--parallel", type=int, help=describe("parallel"))
def serve(**options: Any) -> None:
    """Serve a model on 127.0.0.1 until Ctrl-C (the starter model by default)."""
    from localserve.daemon.daemon import configure_logging, run_daemon
    from localserve.hub.resolve import resolve_model

    paths = current_paths()
    settings = load_settings(paths.config_file, overrides=options)
    model = resolve_model(settings.model, paths.models_dir)
    configure_logging(settings, paths)

    def announce(state: DaemonState) -> None:
        click.echo(
            f"localserve {__version__} is serving '{model.model_id}'\n"
            f"  API base URL: {state.url}/v1\n"
            "  API key:      `localserve key show` prints the admin key;\n"
            "                `localserve key add NAME` makes a revocable key for one app\n"
            f"  Logs:         {paths.log_dir}\n"
            "  Stop:         Ctrl-C",
        )

    run_daemon(settings, paths, model, on_listening=announce)


def running_daemon(paths: AppPaths) -> DaemonState:
    state = read_state(paths.state_file)
    if state is None:
        raise DaemonNotRunningError("localserve is not running. Start it with `localserve serve`.")
    return state


@cli.command()
def status() -> None:
    """Show whether the daemon is running, where, and the state of its model."""
    paths = current_paths()
    state = running_daemon(paths)
    uptime = int(time.time() - state.started_at)
    click.echo(
        f"localserve {state.version} is running at {state.url}/v1 (pid {state.pid}, up {uptime}s)"
    )
    try:
        with DaemonClient(state, KeyStore(paths).admin_key(), timeout=3.0) as client:
            details = client.get("/status")
    except LocalserveError as exc:
        click.echo(f"  (could not read details: {exc})")
        return
    for model in details["models"]:
        line = f"  model {model['model_id']}: {model['state']}"
        info = model.get("info") or {}
        if info:
            line += f", ctx {info.get('n_ctx')}, gpu layers {info.get('gpu_layers')}"
        if model.get("restarts"):
            line += f", restarted {model['restarts']}x"
        click.echo(line)
        if model.get("last_error") and model["state"] != "ready":
            click.echo(f"  last error: {model['last_error']}")


@cli.command()
@click.option("--timeout", default=20.0, show_default=True, help="Seconds to wait for it to exit.")
def stop(timeout: float) -> None:
    """Stop the running daemon (and its model runner) cleanly."""
    paths = current_paths()
    state = running_daemon(paths)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(state.pid).terminate()
    deadline = time.monotonic() + timeout
    while is_alive(state.pid):  # a zombie counts as stopped: it is its parent's to reap
        if time.monotonic() > deadline:
            raise LocalserveError(
                f"localserve (pid {state.pid}) did not stop within {timeout:.0f} s; "
                f"see {paths.daemon_log}."
            )
        time.sleep(0.1)
    click.echo(f"Stopped localserve (pid {state.pid}).")


@cli.command()
def config() -> None:
    """Show the settings in effect and where they come from."""
    paths = current_paths()
    settings = load_settings(paths.config_file)
    click.echo(f"# config file: {paths.config_file}")
    click.echo(f"# models folder: {paths.models_dir}")
    click.echo(f"# logs: {paths.log_dir}")
    for name, value in settings.model_dump().items():
        click.echo(f"\n# {describe(name)}")
        if value is None:
            click.echo(f"# {name} is not set")
        else:
            click.echo(tomli_w.dumps({name: value}).strip())


@cli.group()
def key() -> None:
    """Manage API keys: the admin key and per-app client keys."""


@key.command("show")
def key_show() -> None:
    """Print the admin key (only the key, for scripts: KEY=$(localserve key show))."""
    click.echo(KeyStore(current_paths()).admin_key())


@key.command("rotate")
def key_rotate() -> None:
    """Replace the admin key; the old one stops working on the next request."""
    store = KeyStore(current_paths())
    store.rotate_admin_key()
    click.echo(f"Admin key rotated (stored in {store.admin_key_location()}).", err=True)
    click.echo("Run `localserve key show` to print it.", err=True)


@key.command("add")
@click.argument("name")
def key_add(name: str) -> None:
    """Create a client key for one app or device; it is shown only this once."""
    new_key = KeyStore(current_paths()).add_client_key(name)
    click.echo(f"Client key '{name}' created. Copy it now; it is not shown again:", err=True)
    click.echo(new_key)


@key.command("list")
def key_list() -> None:
    """List client keys (names and a short hint, never the keys)."""
    keys = KeyStore(current_paths()).client_keys()
    if not keys:
        click.echo("No client keys. Create one with `localserve key add NAME`.")
        return
    for client_key in keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(client_key.created_at))
        click.echo(f"{client_key.name:<24} {client_key.hint}...  created {created}")


@key.command("revoke")
@click.argument("name")
def key_revoke(name: str) -> None:
    """Revoke a client key; it stops working on the next request."""
    KeyStore(current_paths()).revoke_client_key(name)
    click.echo(f"Client key '{name}' revoked.")


from localserve.cli_hub import hub  # noqa: E402 - registered after the core commands
from localserve.cli_models import models  # noqa: E402

cli.add_command(models)
cli.add_command(hub)


def main() -> None:
    cli(prog_name="localserve")
