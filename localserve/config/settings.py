"""The one typed settings object, in sections.

Precedence, highest first: explicit overrides (CLI options) > ``LOCALSERVE_*`` environment
variables > ``config.toml`` in the config dir > the defaults below. Each field's description is
its documentation: ``localserve config`` and docs/settings.md are built from it.

Sections: ``settings.engine`` (``api.engine.EngineSettings``: how a runner loads and runs its
model, carried unchanged to the runner and its scheduler), ``settings.limits``
(``LimitSettings``: what a model, a key, a request may take and how long each wait lasts) and
``settings.remote`` (``RemoteSettings``: remote access). Code reads the sections; what is left
at the top (host, port, model, ...) is read from ``settings`` itself.

How: each section is a frozen model that declares its fields once, and ``Settings`` inherits
them all, so it stays one flat model underneath. That flat model is what users and tools
already have: the TOML keys, the ``LOCALSERVE_<NAME>`` variables, the CLI options, error
messages naming the file line or variable, the tray's settings window (which builds
``Settings`` from the file's keys) and ``localserve config`` keep working unchanged, with no
name mapping and no migration. The section properties hand out typed copies of their fields.
Nested models were the other way; they would need a custom environment source, a flat-to-nested
mapping for the file, the CLI and the tray, and the reverse for errors and ``localserve
config``: more moving parts for the same names. The price of this way: a section's field keeps
its full, flat name (``settings.remote.remote_port``), the name users write and grep for.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from localserve.api.engine import EngineSettings
from localserve.api.presets import ModelPreset
from localserve.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "LOCALSERVE_"
JSON_TYPES = (list, dict, set, tuple)  # settings of these types are JSON in their variables
DEFAULT_PORT = 11435

SectionT = TypeVar("SectionT", bound=BaseModel)


class LimitSettings(BaseModel):
    """What one model, one key and one request may take, and how long each wait lasts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_loaded_models: int = Field(
        2,
        ge=1,
        le=16,
        description="Models kept loaded at once. A request naming another installed model "
        "loads it, unloading the least recently used idle one when this limit is reached.",
    )
    keep_alive: float = Field(
        300.0,
        description="Seconds a model stays loaded after its last request, then it is unloaded "
        "to give its memory back (the next request loads it again). 0 = unload after each "
        "request; -1 = keep loaded. Requests may override it with a `keep_alive` field "
        '(seconds, or Ollama\'s durations such as "10m").',
    )
    prestart_runner: bool = Field(
        True,
        description="After a model is unloaded, start one runner process ahead, its imports "
        "done, for the next model to load: a reload answers about 0.3 s sooner, for a Python "
        "process without a model (about 70 MB of RAM) while none is loaded.",
    )
    load_ahead: bool = Field(
        True,
        description="At `localserve serve`, have the first runner load the model that the "
        "last launch with the same arguments loaded first, before the daemon has read its "
        "settings (its files unchanged, the same llama.cpp build): the first answer comes "
        "about 0.3 s sooner. A first launch (no config file, no engine check kept yet) has "
        "the starter model's weights loaded that way. When the settings changed since, that "
        "load is freed and the model asked for is loaded. Takes effect from the next launch "
        "(kept in first-runner.json in the data folder; POSIX only).",
    )
    max_queue: int = Field(
        32,
        ge=0,
        le=4096,
        description="Requests that may wait for a model's busy slots; beyond that a request "
        "gets 429 at once, with Retry-After, instead of waiting for minutes.",
    )
    share_cpu_threads: bool = Field(
        True,
        description="Split the CPU threads between models generating at the same time (each "
        "gets its part while it is busy; a model busy alone gets them all). Off, every model "
        "uses all of them, and two busy models slow each other down many times over.",
    )
    crash_limit: int = Field(
        5,
        ge=1,
        description="A runner that dies this many times within crash_window seconds is not "
        "restarted again: the model is marked failed with the reason and the end of its log.",
    )
    crash_window: float = Field(600.0, gt=0, description="The window for crash_limit, in seconds.")
    max_concurrent_per_key: int = Field(
        0,
        ge=0,
        description="Inference requests one key may have in flight on this machine (429 above; "
        "0 = no limit, the model's queue still bounds them).",
    )
    rate_limit_per_key: int = Field(
        0,
        ge=0,
        description="Inference requests a minute one key may make, locally and remotely "
        "(429 with Retry-After above; bursts of as many; 0 = no limit).",
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted, in bytes (413 above); images sent inline "
        "(base64) count, so it is a few photos' worth.",
    )
    max_image_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1024,
        description="Largest image file accepted, inline or fetched from an http(s) URL "
        "(400 above). Images are also limited to 8K (33 megapixels) when decoded.",
    )
    allow_private_image_urls: bool = Field(
        False,
        description="Let image URLs in requests reach loopback, link-local and private "
        "addresses (this machine, the LAN, cloud metadata services). Off, such URLs are "
        "refused with a 400, so a request cannot make localserve fetch from inside your network.",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's headers, on a new connection or "
        "after the previous answer; slower or silent connections are closed (slow-loris).",
    )
    body_timeout: float = Field(
        30.0, gt=0, description="Seconds a client has to send a request's body (408 after)."
    )
    runner_start_timeout: float = Field(
        180.0, gt=0, description="Seconds to wait for a model to load before giving up."
    )
    request_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds the gateway waits for the model's next bytes (504 after that).",
    )
    hub_timeout: float = Field(
        20.0,
        gt=0,
        description="Seconds a Hugging Face Hub call (search, a repo's file list, a model's "
        "header) may take before it fails with a clear error.",
    )
    pull_network_wait: float = Field(
        600.0,
        ge=0,
        description="Seconds a download that lost the network waits for it to come back (trying "
        "again 1, 2, 4 ... 30 s apart) before it fails; the partial file is kept either way "
        "(0 = fail at once).",
    )


class RemoteSettings(BaseModel):
    """The TLS listener for other devices, on a network address (docs/remote-access.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    remote_enabled: bool = Field(
        False,
        description="Remote access: also listen on a network address, TLS only, client keys "
        "only. `localserve remote on|off` switches it, also while serving.",
    )
    remote_address: str | None = Field(
        None,
        description="Address (or interface name) remote access listens on. Empty = this "
        "machine's primary LAN address.",
    )
    remote_port: int = Field(
        11436, ge=0, le=65535, description="TCP port of the remote (TLS) listener."
    )
    remote_cert_file: Path | None = Field(
        None,
        description="Your own TLS certificate (PEM) for remote access; empty = a self-signed "
        "ECDSA P-256 certificate made on first use.",
    )
    remote_key_file: Path | None = Field(
        None, description="The private key (PEM) of remote_cert_file."
    )
    remote_hosts: list[str] = Field(
        default_factory=list,
        description="Extra host names remote clients may use (e.g. a DNS name pointing here); "
        "the certificate's names and addresses are always allowed.",
    )
    remote_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body from a remote client (413 above)."
    )
    remote_max_concurrent_per_key: int = Field(
        4, ge=1, description="Requests one client key may have in flight remotely (429 above)."
    )
    remote_request_timeout: float = Field(
        300.0, gt=0, description="Seconds a remote request may take in all (504 or cut after)."
    )
    remote_auth_failures: int = Field(
        10, ge=1, description="Failed remote authentications from one address before lockout."
    )
    remote_auth_window: float = Field(
        60.0, gt=0, description="Seconds over which remote_auth_failures are counted."
    )
    remote_lockout: float = Field(
        300.0, gt=0, description="Seconds an address stays locked out (429 with Retry-After)."
    )


# The sections in the order docs/settings.md lists them, after the general settings.
SECTIONS: dict[str, type[BaseModel]] = {
    "Engine": EngineSettings,
    "Limits": LimitSettings,
    "Remote access": RemoteSettings,
}


class Settings(RemoteSettings, LimitSettings, EngineSettings):
    """All settings; ``load_settings`` fills them from the file, the environment and the CLI
    (a plain model: it reads no environment itself, so a check of typed values sees only them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        "127.0.0.1",
        description="Address the gateway listens on. Only loopback is allowed; other devices "
        "reach the server through remote access (`localserve remote on`).",
    )
    port: int = Field(
        DEFAULT_PORT, ge=0, le=65535, description="TCP port of the gateway (0 picks a free one)."
    )
    model: str | None = Field(
        None,
        description="Model to serve: a name in the models folder or a path to a .gguf file. "
        "Empty means the built-in starter model (SmolLM2-135M-Instruct).",
    )
    local_only: bool = Field(
        False,
        description="Never forward a request to a cloud provider; such requests get a 403 "
        "saying why. `localserve cloud local-only on|off` switches it, also while serving.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS). Empty = no CORS headers.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Daemon log verbosity."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="The daemon log file's format: text lines, or one JSON object per line "
        "(time, level, logger, message) for log collectors. Keys and tokens are masked in both.",
    )
    models: dict[str, ModelPreset] = Field(
        default_factory=dict,
        description='Per-model presets, as `[models."NAME"]` tables: ctx, gpu_layers, threads, '
        "parallel, flash_attention, cache_type_k, cache_type_v, chat_template, keep_alive, "
        "temperature, top_p, top_k, min_p, repeat_penalty, stop, system. They override these "
        "settings for that model, and a request's own fields override them. `localserve models "
        "set NAME key=value` writes them (docs/models.md).",
    )

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_origin(cls, origins: list[str]) -> list[str]:
        if "*" in origins:
            raise ValueError(
                "'*' is not allowed; list the exact origins (e.g. http://localhost:3000)"
            )
        return origins

    @property
    def engine(self) -> EngineSettings:
        """How runners load and run models, as the user set it ('auto' still unresolved)."""
        return self._section(EngineSettings)

    @property
    def limits(self) -> LimitSettings:
        return self._section(LimitSettings)

    @property
    def remote(self) -> RemoteSettings:
        return self._section(RemoteSettings)

    def _section(self, section: type[SectionT]) -> SectionT:
        """A typed copy of one section's fields (validated already, as this object was)."""
        return section.model_construct(
            **{name: getattr(self, name) for name in section.model_fields}
        )


def backup_path(path: Path) -> Path:
    """Where the last good copy of ``path`` is kept (written before every change)."""
    return path.with_name(path.name + ".bak")


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML config file as a dict; missing file = empty.

    Raises ConfigError naming the file and line when it cannot be read, and where the last
    good copy is, so a hand edit gone wrong is one command away from undone.
    """
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        place = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        reason = re.sub(r"\s*\(at (line|end of document).*\)$", "", str(exc)) or "invalid TOML"
        if place:
            where = f"{path}, line {place[1]}, column {place[2]}"
        else:  # tomllib says "at end of document": the last line is where it went wrong
            last = len(path.read_text(encoding="utf-8", errors="replace").splitlines()) or 1
            where = f"{path}, line {last} (end of file)"
        backup = backup_path(path)
        hint = f" The last good settings are in {backup}." if backup.is_file() else ""
        raise ConfigError(f"{where}: {reason}.{hint}") from exc


def write_config_file(path: Path, values: dict[str, Any]) -> None:
    """Atomically replace ``config.toml``, first copying the current file aside: a readable one
    to ``config.toml.bak``, a broken one to ``config.toml.corrupt`` (so nothing is lost)."""
    import tomli_w

    from localserve.security.secret_store import write_private_file

    if path.is_file():
        try:
            read_config_file(path)
            kept = backup_path(path)
        except ConfigError:
            kept = path.with_name(path.name + ".corrupt")
        write_private_file(kept, path.read_text(encoding="utf-8", errors="replace"))
    write_private_file(path, tomli_w.dumps(values))


def update_config_file(path: Path, **values: Any) -> None:
    """Set some keys of ``config.toml`` (None leaves a key as it is), keeping the others.
    Raises ConfigError, changing nothing, when the current file cannot be read."""
    stored = read_config_file(path)
    stored.update({key: value for key, value in values.items() if value is not None})
    write_config_file(path, stored)


def _line_of_key(path: Path, key: str) -> int | None:
    """The line where a top-level ``key`` is set in ``path``, for error messages."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    return next((number for number, line in enumerate(lines, 1) if pattern.match(line)), None)


def environment_values(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The settings given as ``LOCALSERVE_<NAME>`` variables (the name in any case). Lists and
    tables are JSON; other values stay strings for the model to convert (``"8192"``, ``"true"``,
    ``"auto"``). Variables that name no setting (``LOCALSERVE_HOME``) are not settings.

    Read here rather than through pydantic-settings, whose import cost every `localserve serve`
    about 30 ms before the first runner got its model."""
    given = {name.upper(): value for name, value in environ.items()}
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        variable = f"{ENV_PREFIX}{name}".upper()
        if variable not in given:
            continue
        raw = given[variable]
        if _is_json_field(field.annotation):
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                table = _is_table(field.annotation)
                shape = "a JSON object" if table else 'a JSON list, such as ["a", "b"]'
                raise ConfigError(
                    f"{variable} must be {shape} ({exc.msg} at character {exc.pos + 1})."
                ) from exc
        else:
            values[name] = raw
    return values


def _is_json_field(annotation: Any) -> bool:
    """Whether a setting's type is a list or a table, or may be one (``list[str] | None``):
    given as JSON in its variable."""
    return any(get_origin(t) in JSON_TYPES or t in JSON_TYPES for t in _members(annotation))


def _is_table(annotation: Any) -> bool:
    return any(get_origin(t) is dict or t is dict for t in _members(annotation))


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a union is made of; the type itself otherwise."""
    if get_origin(annotation) in (Union, UnionType):
        return get_args(annotation)
    return (annotation,)


def load_settings(
    config_file: Path,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    env_names = {name.upper() for name in os.environ}
    values = {
        key: value
        for key, value in read_config_file(config_file).items()
        if f"{ENV_PREFIX}{key}".upper() not in env_names
    }
    values.update(environment_values())
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(
            "Invalid settings: "
            + "; ".join(_describe(err, config_file, env_names) for err in exc.errors())
        ) from exc


def _describe(error: Any, config_file: Path, env_names: set[str]) -> str:
    """One validation error, saying where the value came from (file and line, or variable)."""
    key = ".".join(str(part) for part in error["loc"])
    top = str(error["loc"][0]) if error["loc"] else key
    if f"{ENV_PREFIX}{top}".upper() in env_names:
        source = f"{ENV_PREFIX}{top.upper()}"
    else:
        line = _line_of_key(config_file, top)
        source = f"{config_file}, line {line}" if line else "command line"
    return f"{key} ({source}): {error['msg']}"


def settings_reference() -> str:
    """docs/settings.md, generated from the field descriptions (a test keeps the file in sync)."""
    lines = [
        "# Settings",
        "",
        "Generated from `localserve/config/settings.py`; `localserve config` shows the values in",
        "effect. Each setting can be given, highest precedence first, as a command-line option",
        "(where `serve` has one), as an environment variable `LOCALSERVE_<NAME>`, or in",
        "`config.toml` in the config folder (`localserve config` prints its path).",
        "",
        "Example `config.toml`:",
        "",
        "```toml",
        "port = 11435",
        "ctx = 8192",
        'gpu_layers = "auto"',
        'cors_origins = ["http://localhost:3000"]',
        "```",
        "",
        "Lists in environment variables are JSON: "
        "`LOCALSERVE_CORS_ORIGINS='[\"http://localhost:3000\"]'`.",
        "",
        "## General",
        "",
    ]
    sectioned = {name for section in SECTIONS.values() for name in section.model_fields}
    lines += _reference_table([name for name in Settings.model_fields if name not in sectioned])
    for title, section in SECTIONS.items():
        lines += ["", f"## {title}", "", section.__doc__ or "", ""]
        lines += _reference_table(list(section.model_fields))
    lines.append("")
    return "\n".join(lines)


def _reference_table(names: list[str]) -> list[str]:
    lines = [
        "| setting | environment variable | default | description |",
        "|---|---|---|---|",
    ]
    for name in names:
        field = Settings.model_fields[name]
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        lines.append(
            f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | `{default!r}` | {field.description} |"
        )
    return lines
