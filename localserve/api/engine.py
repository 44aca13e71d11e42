"""The engine settings: one typed object from ``config.toml`` to the scheduler.

``EngineSettings`` is declared once, here, with each knob's description: the daemon's
``Settings`` inherits these fields (so their TOML keys, ``LOCALSERVE_*`` variables, CLI help and
docs/settings.md come from this class), the daemon puts this machine's answers in place of
"automatic" once (``hardware.devices.resolve_engine``), the runner handshake carries the object
as it is (``api.runner.RunnerConfig``), and the runner hands the same object to its ``Engine``
and ``Scheduler``. A new engine setting is one field here plus the code that uses it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WeightRepack = Literal["auto", "on", "off"]
FlashAttention = Literal["auto", "on", "off"]
KvCacheType = Literal["f16", "q8_0", "q4_0"]
# Bytes per value in the KV cache: q8_0 and q4_0 store blocks of 32 values with an f16 scale.
KV_TYPE_BYTES: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
SHARED_KV_CONTEXTS = 2  # the shared KV cache's default size, in contexts
SHARED_KV_PARALLEL = 32  # slots by default with a shared KV cache: they reserve nothing


class EngineSettings(BaseModel):
    """How a runner loads and runs its model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ctx: int = Field(
        4096, ge=0, description="Context window in tokens (0 = the model's training length)."
    )
    gpu_layers: Literal["auto"] | int = Field(
        "auto",
        description="Layers offloaded to the GPU: 'auto' offloads all where llama.cpp was built "
        "with GPU support (CUDA, Metal, Vulkan) and none otherwise; a number sets it; "
        "0 = CPU only.",
    )
    threads: int = Field(
        0, ge=0, description="CPU threads for generation (0 = the physical core count)."
    )
    parallel: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Requests generated at once, batched into one decode step (slots); more "
        "wait in a queue. Empty = 32, sharing one KV cache (with batch_exact: as many "
        "full-context KV caches as fit in a quarter of free RAM, at most 8).",
    )
    kv_cache_tokens: int = Field(
        0,
        ge=0,
        description="Size of the KV cache a model's requests share, in tokens: each request "
        "takes cells as its prompt and answer grow and gives them back when it ends, and idle "
        "prefixes kept for reuse are dropped first when it fills. 0 = twice ctx. Never less "
        "than ctx, so one request of a full context always fits. Ignored with batch_exact.",
    )
    batch_exact: bool = Field(
        False,
        description="One KV cache per slot, each of a full context, instead of one shared "
        "cache: a request then gives exactly the same tokens alone or batched with others, at "
        "the cost of reserving ctx x parallel tokens of memory and fewer slots.",
    )
    prefix_reuse: bool = Field(
        True,
        description="Reuse the KV cache of a prompt's known beginning (chat history, system "
        "prompt, file context) instead of recomputing it. Off only to measure what it saves.",
    )
    weight_repack: WeightRepack = Field(
        "auto",
        description="llama.cpp's extra weight layouts for the CPU (AMX tiles on Intel Xeons, "
        "repacked Q4_0/IQ4_NL blocks): 'auto' uses them after the engine check has seen them "
        "decode on this CPU (llama.cpp's AMX kernels crash on some Xeons), 'on' always, 'off' "
        "never (as llama-server --no-repack).",
    )
    cpu_variant: str = Field(
        "auto",
        description="Which CPU kernels a portable llama.cpp build (the packaged app, `make "
        "setup` on x86-64) loads: 'auto' = the best one for this CPU that passes the engine "
        "check; or a name such as 'haswell', 'icelake', 'zen4' (`localserve status` lists "
        "them). Native builds have one, built in, and ignore this.",
    )

    thinking_budget: int = Field(
        0,
        ge=0,
        description="Tokens a thinking model (Qwen3, DeepSeek-R1, gpt-oss...) may spend on its "
        "thoughts before the engine closes them and the answer follows; 0 = no limit. A "
        "request's own budget (Anthropic's thinking.budget_tokens, the OpenAI extension "
        "thinking_budget_tokens) takes its place.",
    )

    flash_attention: FlashAttention = Field(
        "auto",
        description="llama.cpp's flash attention: 'auto' lets llama.cpp use it wherever the "
        "device supports it (as llama-server does; on a 2-core CPU it made one stream 9% and "
        "16 streams 29% faster), except with batch_exact, whose exactness it would break; "
        "'on' always, 'off' never ('off' with CUDA crashed a 32-stream burst in one test: "
        "docs/benchmarks.md).",
    )
    cache_type_k: KvCacheType = Field(
        "f16",
        description="How the KV cache stores keys: 'f16', or 'q8_0' (about half the memory, "
        "near-lossless) or 'q4_0' (about a quarter, some quality loss). The fit estimate and "
        "the memory figures follow it.",
    )
    cache_type_v: KvCacheType = Field(
        "f16",
        description="How the KV cache stores values, as cache_type_k. A quantized V cache "
        "needs flash attention (not 'off').",
    )

    @model_validator(mode="after")
    def _quantized_v_needs_flash_attention(self) -> EngineSettings:
        if self.cache_type_v != "f16" and self.flash_attention == "off":
            raise ValueError(
                f"cache_type_v = '{self.cache_type_v}' needs flash attention: set "
                "flash_attention to 'auto' or 'on', or cache_type_v to 'f16'"
            )
        return self

    @field_validator("gpu_layers", mode="before")
    @classmethod
    def _parse_gpu_layers(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return value

    @property
    def kv_scale(self) -> float:
        """A KV cell's size against the f16 cell the estimates are written for."""
        return (KV_TYPE_BYTES[self.cache_type_k] + KV_TYPE_BYTES[self.cache_type_v]) / 4

    def kv_cells(self, ctx: int, parallel: int) -> int:
        """KV cache cells a runner reserves for context ``ctx`` and ``parallel`` slots."""
        if self.batch_exact:
            return ctx * parallel
        return max(ctx, self.kv_cache_tokens or SHARED_KV_CONTEXTS * ctx)

    def kv_contexts(self, ctx: int, parallel: int) -> int:
        """The same, in full contexts (rounded up), as the fit estimate counts them."""
        return -(-self.kv_cells(ctx, parallel) // max(1, ctx))

    @property
    def n_gpu_layers(self) -> int:
        """llama.cpp's ``n_gpu_layers``, once ``resolve_engine`` has decided what 'auto' is."""
        if self.gpu_layers == "auto":
            raise ValueError("gpu_layers is still 'auto': resolve the engine settings first")
        return self.gpu_layers
