"""llama.cpp in a benchmark's own process, or in a peer's, the way localserve's runners use it.

A portable llama.cpp build loads no CPU backend by itself, and some CPUs crash on llama.cpp's
default kernels (the AMX ones), so every peer that loads llama.cpp first asks the same engine
check the runners do (``daemon/engine_path.py``) and loads the path it chose. The verdicts are
kept where localserve keeps them (``LOCALSERVE_HOME`` or the user's data folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

from localserve.api.runner import EnginePath
from localserve.daemon.engine_path import (
    EngineChoice,
    VerdictStore,
    choose_engine_path,
    prepare_in_process,
)
from localserve.hub.gguf_header import read_gguf_header
from localserve.paths import app_paths


def verdicts() -> VerdictStore:
    paths = app_paths()
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    return VerdictStore(paths.engine_checks_file)


def engine_path(model_path: Path, threads: int) -> EnginePath:
    """The engine check's verdict for this model (running the check if none is kept)."""
    quant_type = read_gguf_header(model_path).quant_type
    return choose_engine_path(model_path, quant_type, EngineChoice(threads=threads), verdicts())


def load_in_process(model_path: Path, threads: int) -> EnginePath:
    """Get this process ready to load ``model_path`` with llama-cpp-python; wrap the load in
    ``llama_backends.extra_buffer_types(path.extra_buffers)``."""
    return prepare_in_process(model_path, verdicts(), threads)


def python_module_command(module: str, path: EnginePath) -> list[str]:
    """``python -m MODULE`` for a peer (llama_cpp.server) that loads llama.cpp on its own."""
    code = (
        "import runpy\n"
        "from localserve.runner import llama_backends\n"
        f"llama_backends.load_backends({path.cpu_variant!r})\n"
        f"with llama_backends.extra_buffer_types({path.extra_buffers!r}):\n"
        f"    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    return [sys.executable, "-c", code]
