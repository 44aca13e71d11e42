"""A model's weights, loaded apart from the rest of the engine.

A runner starts this load as soon as its handshake comes, on its loading thread, while its
main thread still imports the engine's other parts and the HTTP side (Jinja, the request
models, Starlette): llama.cpp's load runs in C without the GIL, so the two overlap. Only the
binding and this module are imported first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import psutil
from llama_cpp import _internals

from localserve.api.engine import EngineSettings
from localserve.api.runner import LLAMA_DEFAULTS, EnginePath
from localserve.errors import ModelLoadError
from localserve.hardware.devices import resolve_engine
from localserve.runner import llama_backends


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    model_id: str
    settings: EngineSettings  # as the runner's config line carries it; on to the scheduler
    engine_path: EnginePath = LLAMA_DEFAULTS
    mmproj_path: Path | None = None  # a vision projector: the model then sees images
    chat_template: str | None = None  # in place of the file's (a model preset's)


@dataclass(frozen=True)
class Weights:
    model: Any  # the binding's LlamaModel
    settings: EngineSettings  # with "auto" decided
    supports_offload: bool
    rss_before_load: int  # the process's RSS before the load: the base of memory figures


def check_gguf_magic(path: Path) -> None:
    """Fail fast, with a clear message, on files that are not GGUF at all."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadError(f"Cannot read model file {path}: {exc.strerror or exc}") from exc
    if magic != b"GGUF":
        raise ModelLoadError(f"{path.name} is not a GGUF model file (bad header).")


def load_weights(config: EngineConfig) -> Weights:
    """Load the model file of ``config`` on the path the engine check chose."""
    rss_before_load = psutil.Process().memory_info().rss
    check_gguf_magic(config.model_path)
    llama_backends.log_from_c()
    supports_offload = bool(llama_cpp.llama_supports_gpu_offload())
    # The daemon resolved them already (then this changes nothing); in-process callers, as
    # tests and benchmarks, may pass them as a user writes them.
    settings = resolve_engine(config.settings, supports_offload)
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = settings.n_gpu_layers
    params.use_extra_bufts = config.engine_path.extra_buffers
    llama_cpp.llama_backend_init()
    try:
        # The binding's model alone, not its ``Llama``: that compiles every chat template in
        # the file with an unlimited Jinja (a hostile one costs a gigabyte and half a minute;
        # ``ChatTemplate`` renders ours, with limits) and makes a context.
        model = _internals.LlamaModel(
            path_model=str(config.model_path), params=params, verbose=False
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"llama.cpp could not load {config.model_path.name}: the file is corrupt, "
            "truncated, of an unsupported architecture, or too large for memory."
        ) from exc
    return Weights(model, settings, supports_offload, rss_before_load)
