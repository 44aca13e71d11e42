"""Cloud providers: any OpenAI-compatible base URL, with its key in the keyring.

``providers.json`` in the config dir holds what is not secret: each provider's base URL, whether
it may take over requests for local models that fail to load (``allow_fallback``), its price
table, and the mappings from local (or Hub) model names to cloud models. Keys live in the system
keyring (or a 0600 file where there is none), never in that file and never in logs.

The daemon re-reads the file when its modification stamp changes, so `localserve cloud ...`
takes effect on the next request.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from localserve.errors import ConfigError
from localserve.paths import AppPaths
from localserve.security.secret_store import (
    StoredSecret,
    read_private_json,
    write_private_json,
)

PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
PRESETS = {
    "openai": "https://api.openai.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "together": "https://api.together.xyz/v1",
    "groq": "https://api.groq.com/openai/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "mistral": "https://api.mistral.ai/v1",
}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


@dataclass(frozen=True)
class Price:
    prompt_per_million: float
    completion_per_million: float


@dataclass
class Provider:
    name: str
    base_url: str
    allow_fallback: bool = False  # may serve mapped local models that fail to load
    prices: dict[str, Price] = field(default_factory=dict)
    added_at: float = field(default_factory=time.time)
    # Takes OpenAI's Responses API (POST /responses) as it is; None: only OpenAI's own API.
    responses_api: bool | None = None

    @property
    def speaks_responses(self) -> bool:
        """Whether /v1/responses requests are relayed as they are, rather than translated
        into chat completions (which every provider takes)."""
        if self.responses_api is not None:
            return self.responses_api
        return urlsplit(self.base_url).hostname == "api.openai.com"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provider:
        prices = {model: Price(**price) for model, price in (data.get("prices") or {}).items()}
        return cls(
            name=str(data["name"]),
            base_url=str(data["base_url"]),
            allow_fallback=bool(data.get("allow_fallback", False)),
            prices=prices,
            added_at=float(data.get("added_at") or 0.0),
            responses_api=data.get("responses_api"),
        )


def is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, own_ports: set[int]) -> list[str]:
    """Refuse what cannot work or would loop; return warnings for what is merely unwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"'{url}' is not an http(s) URL (e.g. https://api.openai.com/v1).")
    if parts.username or parts.password:
        raise ConfigError("Put the API key in the keyring (--key-from-stdin), not in the URL.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if is_loopback_host(parts.hostname) and port in own_ports:
        raise ConfigError(f"{url} is this localserve itself: forwarding there would loop forever.")
    warnings = []
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        warnings.append(
            f"{url} is plain http to another machine: the provider key and every prompt "
            "cross the network unencrypted. Use https unless that network is yours."
        )
    return warnings


class ProviderStore:
    def __init__(self, paths: AppPaths) -> None:
        self.paths = paths
        self.file = paths.config_dir / "providers.json"

    # -- reading -------------------------------------------------------------------------------
    def stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.file.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def load(self) -> tuple[dict[str, Provider], dict[str, str]]:
        """(providers by name, mappings local name -> provider/model)."""
        data = self._read()
        providers = {
            name: Provider.from_json({**entry, "name": name})
            for name, entry in (data.get("providers") or {}).items()
        }
        mappings = {str(k): str(v) for k, v in (data.get("mappings") or {}).items()}
        return providers, mappings

    def get(self, name: str) -> Provider:
        providers, _ = self.load()
        if name not in providers:
            known = ", ".join(sorted(providers)) or "none yet (`localserve cloud add`)"
            raise ConfigError(f"No cloud provider named '{name}'. Providers: {known}.")
        return providers[name]

    def key(self, name: str) -> StoredSecret:
        return StoredSecret(
            f"provider-{name}",
            self.paths.config_dir / "provider-keys" / f"{name}.key",
            f"the API key of provider {name}",
        )

    # -- changes -------------------------------------------------------------------------------
    def add(self, provider: Provider, key: str | None) -> None:
        if not PROVIDER_NAME.match(provider.name):
            raise ConfigError(
                f"Invalid provider name '{provider.name}': use 1-32 lower-case letters, digits, "
                "'-' or '_'."
            )
        data = self._read()
        providers = data.setdefault("providers", {})
        if provider.name in providers:
            raise ConfigError(
                f"A provider named '{provider.name}' exists; `localserve cloud rm` it first."
            )
        if key:
            self.key(provider.name).set(key)
        entry = provider.to_json()
        entry.pop("name")
        providers[provider.name] = entry
        self._write(data)

    def remove(self, name: str) -> None:
        data = self._read()
        if name not in (data.get("providers") or {}):
            self.get(name)  # raises the error that lists what exists
        del data["providers"][name]
        data["mappings"] = {
            local: target
            for local, target in (data.get("mappings") or {}).items()
            if not target.startswith(f"{name}/")
        }
        self._write(data)
        self.key(name).delete()

    def update(self, provider: Provider) -> None:
        data = self._read()
        entry = provider.to_json()
        entry.pop("name")
        data.setdefault("providers", {})[provider.name] = entry
        self._write(data)

    def map(self, local_name: str, target: str) -> None:
        provider, _, model = target.partition("/")
        self.get(provider)
        if not model:
            raise ConfigError(f"'{target}' needs a model: PROVIDER/MODEL, e.g. openai/gpt-4o-mini.")
        data = self._read()
        data.setdefault("mappings", {})[local_name.strip().lower()] = target
        self._write(data)

    def unmap(self, local_name: str) -> None:
        data = self._read()
        mappings = data.get("mappings") or {}
        if mappings.pop(local_name.strip().lower(), None) is None:
            raise ConfigError(f"'{local_name}' is not mapped to a cloud model.")
        self._write(data)

    # -- file ----------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        return read_private_json(self.file, ConfigError)

    def _write(self, data: dict[str, Any]) -> None:
        write_private_json(self.file, data)
