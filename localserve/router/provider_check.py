"""Is a cloud provider usable? The one check behind `localserve cloud test` and the tray's
Test button: ask the provider for its models with its key, and say in one line what is wrong
when that fails.

It blocks (one ``GET /models``), so the tray calls it on a worker thread. Failures are the
errors the relay raises for the same faults (``router/cloud.py``: no network, nothing
listening, a proxy or TLS failure, no answer in time, a web page instead of JSON, the provider
failing or limiting requests), plus a ``ConfigError`` when the provider refuses the key; each
caller says how to set the key again in its own terms (``key_advice``).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from localserve.cloud.providers import Provider
from localserve.errors import ConfigError
from localserve.network import FaultKind, NetworkFault, fault_from_response, host_of
from localserve.router.cloud import provider_fault, provider_message, upstream_error

CHECK_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ProviderCheck:
    """A provider that answered and took the key, and the models it lists."""

    provider: str
    models: list[str]

    def verdict(self) -> str:
        return f"{self.provider} works: {len(self.models)} models."


def check_provider(
    provider: Provider, key: str | None, key_advice: str, timeout: float = CHECK_TIMEOUT_S
) -> ProviderCheck:
    """List ``provider``'s models with ``key``; raise a one-line error when that fails.

    ``key_advice`` ends the message for a refused key ("set it again with ...")."""
    name = provider.name
    headers = {"authorization": f"Bearer {key}"} if key else {}
    url = f"{provider.base_url.rstrip('/')}/models"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise upstream_error(name, exc, timeout) from exc
    fault = fault_from_response(response)
    if fault is not None:
        raise provider_fault(name, fault, response.content)
    if response.status_code in (401, 403):
        detail = provider_message(response.content)
        raise ConfigError(
            f"{name} refused the key (HTTP {response.status_code}"
            f"{': ' + detail if detail else ''}); {key_advice}."
        )
    if response.status_code != 200:
        detail = provider_message(response.content) or response.text[:200]
        raise ConfigError(f"{name} answered HTTP {response.status_code} for {url}: {detail}")
    try:
        data = response.json().get("data") or []
        models = [str(item["id"]) for item in data if isinstance(item, dict) and item.get("id")]
    except (ValueError, AttributeError, TypeError):
        raise provider_fault(
            name, NetworkFault(FaultKind.WEB_PAGE, host_of(url), status=response.status_code)
        ) from None
    return ProviderCheck(name, models)
