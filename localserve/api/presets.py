"""Per-model presets: each model's own settings, in config.toml's ``[models."NAME"]`` tables.

    [models."qwen3-8b-q4_k_m"]
    ctx = 16384
    cache_type_k = "q8_0"
    temperature = 0.6
    system = "You are a careful assistant."

Precedence, highest first: a request's own fields, the model's preset, the global settings.
Engine keys (context, GPU layers, threads, slots, flash attention, KV-cache types, the chat
template) take effect when the model loads, so changing them while it is loaded reloads it
once it is idle; the others apply to the next request. ``localserve models set NAME key=value``
and the tray's per-model "Settings…" write them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localserve.api.engine import EngineSettings, FlashAttention, KvCacheType
from localserve.errors import ConfigError


class ModelPreset(BaseModel):
    """One model's settings; an unset key falls back to the global setting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Engine: applied when the model loads.
    ctx: int | None = Field(None, ge=0, description="Context window in tokens.")
    gpu_layers: Literal["auto"] | int | None = Field(None, description="Layers on the GPU.")
    threads: int | None = Field(None, ge=0, description="CPU threads.")
    parallel: int | None = Field(None, ge=1, le=256, description="Requests decoded at once.")
    flash_attention: FlashAttention | None = Field(None, description="auto, on or off.")
    cache_type_k: KvCacheType | None = Field(None, description="KV cache keys: f16, q8_0, q4_0.")
    cache_type_v: KvCacheType | None = Field(None, description="KV cache values, likewise.")
    chat_template: str | None = Field(
        None, description="A Jinja chat template in place of the one in the GGUF file."
    )
    # Use.
    keep_alive: float | None = Field(None, description="Seconds idle before it is unloaded.")
    # Request defaults: a request's own fields win.
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling.")
    top_k: int | None = Field(None, ge=0, description="Top-k sampling.")
    min_p: float | None = Field(None, ge=0, le=1, description="Min-p sampling.")
    repeat_penalty: float | None = Field(None, gt=0, description="Repetition penalty.")
    stop: list[str] | None = Field(None, max_length=16, description="Stop strings.")
    system: str | None = Field(None, description="A system prompt for chats that have none.")

    def values(self) -> dict[str, Any]:
        """The keys this preset sets."""
        return self.model_dump(exclude_none=True)


def validated_preset(values: dict[str, Any], model: str = "this model") -> ModelPreset:
    """``values`` as a preset, or ConfigError saying in one line which key is wrong and why."""
    try:
        return ModelPreset.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"Invalid setting for {model}: {problems}") from None


ENGINE_KEYS = frozenset(
    {"ctx", "gpu_layers", "threads", "parallel", "flash_attention", "cache_type_k"}
    | {"cache_type_v", "chat_template"}
)
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "stop")


def engine_for(base: EngineSettings, preset: ModelPreset | None) -> EngineSettings:
    """The global engine settings with the preset's engine keys in their place."""
    if preset is None:
        return base
    changes = {
        key: value
        for key, value in preset.values().items()
        if key in ENGINE_KEYS and key in EngineSettings.model_fields
    }
    return base.model_copy(update=changes) if changes else base


def fit_inputs(preset: ModelPreset | None) -> tuple[int | None, float]:
    """What a model's fit verdict is computed with: the preset's context (None: the estimate's
    default) and its KV cache's size against f16 (``EngineSettings.kv_scale``)."""
    if preset is None:
        return None, 1.0
    engine = EngineSettings(
        cache_type_k=preset.cache_type_k or "f16", cache_type_v=preset.cache_type_v or "f16"
    )
    return preset.ctx or None, engine.kv_scale


def with_request_defaults(payload: dict[str, Any], preset: ModelPreset | None) -> dict[str, Any]:
    """An OpenAI request with the preset's sampling defaults where the request has none, and
    its system prompt in a chat that has no system message."""
    if preset is None:
        return payload
    values = preset.values()
    # A field a translator set to null (Anthropic's absent temperature) is absent too.
    filled = {
        key: values[key] for key in SAMPLING_KEYS if key in values and payload.get(key) is None
    }
    if not filled and "system" not in values:
        return payload
    payload = {**payload, **filled}
    messages = payload.get("messages")
    if "system" in values and isinstance(messages, list):
        has_system = any(
            isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages
        )
        if not has_system:
            payload["messages"] = [{"role": "system", "content": values["system"]}, *messages]
    return payload


# The preset keys Ollama's Modelfile has a PARAMETER for, under Ollama's names.
OLLAMA_PARAMETERS = {
    "ctx": "num_ctx",
    "gpu_layers": "num_gpu",
    "threads": "num_thread",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
}


def ollama_parameters(preset: ModelPreset | None) -> str:
    """The preset as Ollama's ``/api/show`` writes ``parameters``: one per line, the name
    padded to 30 columns, stop strings quoted."""
    values = preset.values() if preset is not None else {}
    lines = [
        f"{name:<30} {values[key]}" for key, name in OLLAMA_PARAMETERS.items() if key in values
    ]
    lines += [f'{"stop":<30} "{stop}"' for stop in values.get("stop", [])]
    return "\n".join(lines)


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``key=value`` words (as typed after `models set NAME`) into preset values; an empty
    value (``key=``) removes the key. Values are read as TOML would: numbers, true/false,
    quoted or bare strings; ``stop`` takes a comma-separated list."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"'{assignment}' is not key=value (e.g. temperature=0.6).")
        if key not in ModelPreset.model_fields:
            known = ", ".join(ModelPreset.model_fields)
            raise ConfigError(f"'{key}' is not a model setting. The settings: {known}.")
        values[key] = _value(key, raw.strip())
    return values


def _value(key: str, raw: str) -> Any:
    if raw == "":
        return None
    if key == "stop":
        return [item.strip() for item in raw.split(",") if item.strip()]
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if raw in ("true", "false"):
        return raw == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw
