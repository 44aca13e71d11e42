"""The ``localserve`` command: parses arguments and calls the core; errors become one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeGuard

import click

from localserve import __version__
from localserve import logs as log_files
from localserve.config import Settings, load_settings
from localserve.daemon.launcher import stop_daemon
from localserve.daemon.state import DaemonState, read_state
from localserve.errors import DaemonNotRunningError, LocalserveError
from localserve.network import fault_from_exception
from localserve.paths import AppPaths, app_paths
from localserve.security.keys import KeyStore

if TYPE_CHECKING:
    import httpx

    from localserve.api.control import DaemonStatus, StatsSnapshot

FIELDS = Settings.model_fields


def describe(name: str) -> str:
    return FIELDS[name].description or ""


class LocalserveGroup(click.Group):
    """Turns every LocalserveError (and a network fault no layer below named) into one readable
    line and exit status 1, and Ctrl-C into "Cancelled." and status 130.

    The command groups (and commands) in ``LAZY_GROUPS`` are imported only when used (or listed
    in the help): `localserve serve` does not pay for importing the Hub, cloud, models and chat
    commands before it starts its runner (cold start)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_GROUPS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_GROUPS and name not in self.commands:
            module, attribute = LAZY_GROUPS[name]
            self.add_command(getattr(import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LocalserveError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            if not is_request_error(exc):
                raise
            url = exc.request.url
            fault = fault_from_exception(exc, url)
            click.echo(f"Error: {fault.describe(f'{url.scheme}://{url.host}')}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("\nCancelled.", err=True)
            sys.exit(130)


def is_request_error(exc: BaseException) -> TypeGuard[httpx.RequestError]:
    """One of httpx's connection errors. httpx is looked up, not imported: `serve` imports it
    only after its runner has its model (cold start), and an error can only be httpx's once
    httpx is loaded."""
    loaded = sys.modules.get("httpx")
    return loaded is not None and isinstance(exc, loaded.RequestError)


LAZY_GROUPS = {
    "models": ("localserve.cli.models", "models"),
    "hub": ("localserve.cli.hub", "hub"),
    "cloud": ("localserve.cli.cloud", "cloud"),
    "remote": ("localserve.cli.remote", "remote"),
    "autostart": ("localserve.cli.desktop", "autostart"),
    "desktop": ("localserve.cli.desktop", "desktop"),
    "chat": ("localserve.cli.chat", "chat"),
}


def current_paths() -> AppPaths:
    return app_paths().ensure()


@click.group(cls=LocalserveGroup, invoke_without_command=True)
@click.version_option(__version__, prog_name="localserve")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """localserve: your own models as an authenticated, OpenAI-compatible API on localhost.

    Without a command it opens the tray app where there is a display, and prints this help
    where there is none.
    """
    if ctx.invoked_subcommand is None:
        if display_available():
            ctx.invoke(tray)
        else:
            click.echo(ctx.get_help())


def display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@cli.command()
def tray() -> None:
    """Open the tray app (starts serving if it is not running)."""
    try:
        from localserve.gui.app import run_tray
    except ImportError as exc:
        raise LocalserveError(f"The tray needs PySide6, which cannot be loaded: {exc}") from exc
    sys.exit(run_tray(current_paths()))


@cli.command()
@click.option("--model", "-m", metavar="NAME|PATH", help=describe("model"))
@click.option("--host", metavar="ADDR", help=describe("host"))
@click.option("--port", "-p", type=int, help=describe("port"))
@click.option("--ctx", type=int, help=describe("ctx"))
@click.option("--gpu-layers", metavar="auto|N", help=describe("gpu_layers"))
@click.option("--threads", type=int, help=describe("threads"))
@click.option("--parallel", type=int, help=describe("parallel"))
@click.pass_obj
def serve(first_runner: subprocess.Popen[bytes] | None, /, **options: Any) -> None:
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

    run_daemon(settings, paths, model, on_listening=announce, first_runner=first_runner)


def running_daemon(paths: AppPaths) -> DaemonState:
    state = read_state(paths.state_file)
    if state is None:
        raise DaemonNotRunningError("localserve is not running. Start it with `localserve serve`.")
    return state


@cli.command()
@click.option("--watch", "-w", is_flag=True, help="Keep showing live figures until Ctrl-C.")
def status(watch: bool) -> None:
    """Show whether the daemon is running, its models, live tok/s and memory."""
    from localserve.daemon.client import DaemonClient

    paths = current_paths()
    state = running_daemon(paths)
    with DaemonClient(state, KeyStore(paths).admin_key(), timeout=5.0) as client:
        if not watch:
            click.echo(describe_status(state, client.status(), client.stats()))
            return
        clear = "\x1b[H\x1b[J" if sys.stdout.isatty() else ""
        try:
            for stats in client.stats_events():
                details = client.status()
                click.echo(clear + describe_status(state, details, stats))
                if not clear:
                    click.echo("")
        except KeyboardInterrupt:
            return


def describe_status(state: DaemonState, details: DaemonStatus, stats: StatsSnapshot) -> str:
    from localserve.units import format_bytes

    uptime = int(time.time() - state.started_at)
    lines = [
        f"localserve {state.version} is running at {state.url}/v1 (pid {state.pid}, up {uptime}s)"
    ]
    engine = details.engine
    build = f"  llama.cpp: {engine.build} build"
    if engine.cpu_variants:
        build += f", CPU variants {', '.join(engine.cpu_variants)}"
    build += ", GPU offload " + ("on" if engine.gpu_offload else "not available")
    lines.append(build)
    for model in details.models:
        line = f"  model {model.model_id}: {model.state}"
        info = model.info
        if info:
            line += f", ctx {info.n_ctx}, {info.parallel} slots, gpu layers {info.gpu_layers}"
        kv = stats.memory.kv_cache.get(model.model_id)
        if kv:
            line += (
                f", KV cache {format_bytes(kv.used_bytes)} of "
                f"{format_bytes(kv.reserved_bytes)} in use"
            )
        if model.restarts:
            line += f", restarted {model.restarts}x"
        lines.append(line)
        if info and info.backend:
            lines.append(f"    runs on {info.backend}: {info.engine_note}")
        if model.last_error and model.state != "ready":
            lines.append(f"  last error: {model.last_error}")
    live, recent, totals = stats.live, stats.recent, stats.totals
    ttft = recent.ttft_p50_s
    lines.append(
        f"  live: {live.generation_tps:.1f} tok/s generated, {live.prompt_tps:.1f} tok/s "
        f"prompt, {live.active_requests} active"
        + (f"; TTFT p50 {ttft * 1000:.0f} ms" if ttft is not None else "")
    )
    lines.append(
        f"  since start: {totals.requests} requests, {totals.prompt_tokens} prompt + "
        f"{totals.completion_tokens} generated tokens"
    )
    memory = stats.memory
    line = (
        f"  memory: RAM {format_bytes(memory.ram_used_bytes)} of "
        f"{format_bytes(memory.ram_total_bytes)} in use, runners "
        f"{format_bytes(memory.runners_rss_bytes)}"
    )
    for gpu in memory.gpus:
        line += (
            f"; GPU {gpu.index} {format_bytes(gpu.used_bytes)} of {format_bytes(gpu.total_bytes)}"
        )
    lines.append(line)
    return "\n".join(lines)


@cli.command()
@click.option("--timeout", default=20.0, show_default=True, help="Seconds to wait for it to exit.")
def stop(timeout: float) -> None:
    """Stop the running daemon (and its model runner) cleanly."""
    paths = current_paths()
    running_daemon(paths)
    state = stop_daemon(paths, timeout)
    if state is None:
        raise DaemonNotRunningError("localserve is not running.")
    click.echo(f"Stopped localserve (pid {state.pid}).")


@cli.command()
def config() -> None:
    """Show the settings in effect and where they come from."""
    import tomli_w  # here: `serve` starts faster without it

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


@cli.command()
@click.argument("model", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("-n", "--lines", default=50, show_default=True, help="How many past lines.")
def logs(model: str | None, follow: bool, lines: int) -> None:
    """Print the daemon's log, or with MODEL that model's runner log (its stderr)."""
    paths = current_paths()
    path = paths.runner_log(model) if model else paths.daemon_log
    if not path.exists():
        known = sorted(p.name for p in paths.log_dir.glob("*.log"))
        raise LocalserveError(f"No log at {path}. Logs here: {', '.join(known) or 'none yet'}.")
    for line in log_files.tail(path, lines):
        click.echo(line)
    if follow:
        try:
            for line in log_files.follow(path):
                click.echo(line)
        except KeyboardInterrupt:
            pass


def main(first_runner: subprocess.Popen[bytes] | None = None) -> None:
    """Run the CLI; ``first_runner`` is `serve`'s head start (``daemon/head_start.py``)."""
    cli(prog_name="localserve", obj=first_runner)
