"""A model's weights, loaded apart from the rest of the engine.

A runner opens its model file (``model_file.py``) as soon as its handshake comes, on its
loading thread, before it has imported this module, pydantic or the engine: llama.cpp's load
runs in C without the GIL while the main thread imports them (``run.py``). The model becomes
``Weights`` afterwards (``weights_of``). ``load_weights`` does both at once, for an engine
made in one go (``Engine`` without weights: tests, benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from localserve.api.engine import EngineSettings
from localserve.api.runner import LLAMA_DEFAULTS, EnginePath
from localserve.hardware.devices import resolve_engine
from localserve.runner.model_file import open_model, resident_bytes


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


def load_weights(config: EngineConfig) -> Weights:
    """Load the model file of ``config`` on the path the engine check chose."""
    rss_before_load = resident_bytes()
    # The daemon resolved them already (then this changes nothing); in-process callers, as
    # tests and benchmarks, may pass them as a user writes them.
    settings = resolve_engine(config.settings, bool(llama_cpp.llama_supports_gpu_offload()))
    model = open_model(config.model_path, settings.n_gpu_layers, config.engine_path.extra_buffers)
    return weights_of(model, settings, rss_before_load)


def weights_of(model: Any, settings: EngineSettings, rss_before_load: int) -> Weights:
    """The ``Weights`` of a model loaded (``open_model``) with ``settings``, resolved already
    (``resolve_engine``: by the daemon for a runner's handshake)."""
    return Weights(model, settings, bool(llama_cpp.llama_supports_gpu_offload()), rss_before_load)
