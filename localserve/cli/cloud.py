"""``localserve cloud ...``: providers (OpenAI-compatible APIs), mappings, local-only, usage."""

from __future__ import annotations

import sys

import click

from localserve.cloud.ledger import UsageLedger
from localserve.cloud.providers import PRESETS, Price, Provider, ProviderStore, check_base_url
from localserve.config.settings import load_settings, update_config_file
from localserve.daemon.client import DaemonClient
from localserve.daemon.state import read_state
from localserve.errors import ConfigError
from localserve.paths import AppPaths, app_paths
from localserve.router.provider_check import CHECK_TIMEOUT_S, check_provider


def store() -> ProviderStore:
    return ProviderStore(app_paths().ensure())


def own_ports(paths: AppPaths) -> set[int]:
    """Ports this localserve listens on (or will): forwarding there would loop."""
    ports = {load_settings(paths.config_file).port}
    state = read_state(paths.state_file)
    if state is not None:
        ports.add(state.port)
    return ports


@click.group()
def cloud() -> None:
    """Forward requests to cloud providers (any OpenAI-compatible API)."""


@cloud.command("add")
@click.argument("name")
@click.option("--base-url", help="The API's base URL, e.g. https://api.openai.com/v1.")
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="A known provider's base URL (instead of --base-url).",
)
@click.option("--key-from-stdin", is_flag=True, help="Read the provider's API key from stdin.")
@click.option(
    "--allow-fallback",
    is_flag=True,
    help="Let this provider serve mapped local models that fail to load (e.g. out of memory).",
)
@click.option(
    "--responses-api/--no-responses-api",
    default=None,
    help="Whether the provider takes OpenAI's Responses API as it is (default: only "
    "api.openai.com). Otherwise /v1/responses requests reach it as chat completions.",
)
def cloud_add(
    name: str,
    base_url: str | None,
    preset: str | None,
    key_from_stdin: bool,
    allow_fallback: bool,
    responses_api: bool | None,
) -> None:
    """Add a provider; requests for NAME/MODEL then go to it."""
    if (base_url is None) == (preset is None):
        raise ConfigError("Give exactly one of --base-url URL or --preset NAME.")
    url = (base_url or PRESETS[str(preset)]).rstrip("/")
    paths = app_paths().ensure()
    for warning in check_base_url(url, own_ports(paths)):
        click.echo(f"Warning: {warning}", err=True)
    key = sys.stdin.readline().strip() if key_from_stdin else None
    provider = Provider(name, url, allow_fallback=allow_fallback, responses_api=responses_api)
    ProviderStore(paths).add(provider, key or None)
    stored = " with its key in the keyring" if key else " without a key"
    click.echo(f"Added {name} ({url}){stored}. Use it as model '{name}/MODEL'.")


@cloud.command("list")
def cloud_list() -> None:
    """Providers, their base URLs, and the local models mapped to them."""
    providers, mappings = store().load()
    if not providers:
        click.echo("No cloud providers. Add one with `localserve cloud add NAME --preset openai`.")
        return
    for provider in providers.values():
        has_key = "key stored" if store().key(provider.name).get() else "no key"
        fallback = ", fallback allowed" if provider.allow_fallback else ""
        responses = ", Responses API" if provider.speaks_responses else ""
        click.echo(f"{provider.name:<16} {provider.base_url}  ({has_key}{fallback}{responses})")
    for local, target in sorted(mappings.items()):
        click.echo(f"  {local} -> {target}")


@cloud.command("rm")
@click.argument("name")
def cloud_rm(name: str) -> None:
    """Remove a provider, its key and the mappings to it."""
    store().remove(name)
    click.echo(f"Removed {name}.")


@cloud.command("test")
@click.argument("name")
@click.option(
    "--timeout",
    type=float,
    default=CHECK_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the provider's answer.",
)
def cloud_test(name: str, timeout: float) -> None:
    """Check that the provider answers and takes the key, and list its models.

    When it does not, says why in one line: no network (the name does not resolve, no route),
    nothing listening, a proxy or TLS failure (a captive portal?), no answer in time, a
    web page instead of JSON (a captive portal's login page), the provider failing (5xx) or
    limiting requests (429), or the key refused.
    """
    providers = store()
    provider = providers.get(name)
    advice = f"set it again with `localserve cloud add {name} --base-url {provider.base_url}`"
    checked = check_provider(provider, providers.key(name).get(), advice, timeout)
    click.echo(checked.verdict())
    models = checked.models
    for model in models[:50]:
        click.echo(f"  {name}/{model}")
    if len(models) > 50:
        click.echo(f"  ... and {len(models) - 50} more")


@cloud.command("map")
@click.argument("local_name")
@click.argument("target", metavar="PROVIDER/MODEL")
def cloud_map(local_name: str, target: str) -> None:
    """Serve LOCAL_NAME from a cloud model when it is too large for this machine (or not
    installed at all)."""
    store().map(local_name, target)
    click.echo(f"{local_name} -> {target} when it cannot run here.")


@cloud.command("unmap")
@click.argument("local_name")
def cloud_unmap(local_name: str) -> None:
    """Remove a mapping."""
    store().unmap(local_name)
    click.echo(f"{local_name} is no longer mapped.")


@cloud.command("price")
@click.argument("name")
@click.argument("model")
@click.option("--prompt", type=float, required=True, help="Price per million prompt tokens.")
@click.option("--completion", type=float, required=True, help="Price per million output tokens.")
def cloud_price(name: str, model: str, prompt: float, completion: float) -> None:
    """Set a model's price so `cloud usage` can estimate the cost."""
    providers = store()
    provider = providers.get(name)
    provider.prices[model] = Price(prompt, completion)
    providers.update(provider)
    click.echo(f"{name}/{model}: {prompt} per million prompt tokens, {completion} per million out.")


@cloud.command("local-only")
@click.argument("switch", type=click.Choice(["on", "off"]))
def cloud_local_only(switch: str) -> None:
    """Forbid (on) or allow (off) forwarding to any cloud provider; saved in config.toml."""
    enabled = switch == "on"
    paths = app_paths().ensure()
    update_config_file(paths.config_file, local_only=enabled)
    client = DaemonClient.connect_if_running(paths)
    if client is not None:
        with client:
            client.set_local_only(enabled)
    state = "on: nothing leaves this machine" if enabled else "off: providers may be used"
    click.echo(f"Local-only is {state}.")


@cloud.command("usage")
def cloud_usage() -> None:
    """Requests, tokens and estimated cost per provider and model."""
    lines = UsageLedger(app_paths().ensure().cloud_usage_file).lines()
    if not lines:
        click.echo("Nothing has been forwarded to a cloud provider yet.")
        return
    click.echo(f"{'PROVIDER/MODEL':<40} {'REQUESTS':>8} {'PROMPT':>10} {'OUTPUT':>10} {'COST':>10}")
    for line in sorted(lines, key=lambda item: (item.provider, item.model)):
        cost = f"{line.cost:.4f}" if line.priced else "-"
        click.echo(
            f"{line.provider + '/' + line.model:<40} {line.requests:>8} "
            f"{line.prompt_tokens:>10} {line.completion_tokens:>10} {cost:>10}"
        )
