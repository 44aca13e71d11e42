"""``localserve hub ...``: the Hugging Face token used for gated and private repos."""

from __future__ import annotations

import os
import sys

import click

from localserve.config import load_settings
from localserve.errors import HubAccessError, HubError
from localserve.hub.token import stored_token
from localserve.paths import app_paths


def hub_user(token: str) -> str:
    """The Hub account a token belongs to; HubError when the Hub rejects it or is unreachable."""
    from localserve.hub.client import HubClient

    settings = load_settings(app_paths().ensure().config_file)
    with HubClient(token, settings.limits.hub_timeout) as hub:
        try:
            info = hub.whoami()
        except HubAccessError as exc:
            raise HubAccessError("The Hub rejected this token (HTTP 401); check it.") from exc
    return str(info.get("name") or "?")


@click.group()
def hub() -> None:
    """Sign in to the Hugging Face Hub for gated and private repos."""


@hub.command("login")
@click.option("--token-from-stdin", is_flag=True, help="Read the token from standard input.")
def hub_login(token_from_stdin: bool) -> None:
    """Check a Hugging Face access token with the Hub and store it in the keyring."""
    if token_from_stdin:
        token = sys.stdin.readline().strip()
    else:
        click.echo("Create a read token at https://huggingface.co/settings/tokens", err=True)
        token = click.prompt("Token", hide_input=True).strip()
    if not token:
        raise HubError("No token given.")
    user = hub_user(token)
    secret = stored_token(app_paths().ensure())
    secret.set(token)
    click.echo(f"Logged in to the Hub as {user}; the token is stored in {secret.location()}.")


@hub.command("logout")
def hub_logout() -> None:
    """Forget the stored token."""
    if stored_token(app_paths().ensure()).delete():
        click.echo("Logged out: the stored Hugging Face token was removed.")
    else:
        click.echo("No Hugging Face token was stored.")


@hub.command("status")
def hub_status() -> None:
    """Which token downloads use, and the account it belongs to."""
    secret = stored_token(app_paths().ensure())
    if os.environ.get("HF_TOKEN"):
        source, token = "the HF_TOKEN environment variable", os.environ["HF_TOKEN"]
    elif (stored := secret.get()) is not None:
        source, token = secret.location(), stored
    else:
        click.echo("Not logged in: public repos only. `localserve hub login` adds a token.")
        return
    click.echo(f"Token from {source}: account {hub_user(token)}.")
