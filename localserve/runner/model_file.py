"""Opening a GGUF file with llama.cpp: the call every load of a runner's weights makes.

Only the binding is imported here (and ``llama_backends``), not the engine's settings or
pydantic: a runner starts loading the model its handshake names (``run.py``), or the one it
was told to expect (``anticipation.py``), right after the binding's import, and imports the
rest while llama.cpp loads in C, without the GIL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _internals

from localserve.errors import ModelLoadError
from localserve.runner import llama_backends


def resident_bytes() -> int:
    """This process's RSS: taken before a load, the base of the runner's memory figures."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def check_gguf_magic(path: Path) -> None:
    """Fail fast, with a clear message, on files that are not GGUF at all."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadError(f"Cannot read model file {path}: {exc.strerror or exc}") from exc
    if magic != b"GGUF":
        raise ModelLoadError(f"{path.name} is not a GGUF model file (bad header).")


def open_model(path: Path, gpu_layers: int, extra_buffers: bool) -> Any:
    """The binding's ``LlamaModel`` of ``path``, ``gpu_layers`` offloaded, with or without
    llama.cpp's extra buffer types; the backends must be loaded (``load_backends``)."""
    check_gguf_magic(path)
    llama_backends.log_from_c()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = gpu_layers
    params.use_extra_bufts = extra_buffers
    llama_cpp.llama_backend_init()
    try:
        # The binding's model alone, not its ``Llama``: that compiles every chat template in
        # the file with an unlimited Jinja (a hostile one costs a gigabyte and half a minute;
        # ``ChatTemplate`` renders ours, with limits) and makes a context. Verbose, because
        # quiet points this process's stdout and stderr at /dev/null while it loads: llama.cpp's
        # reason for refusing a file was lost, and so were the other threads' writes (a
        # runner's event channel is its stdout).
        with llama_backends.load_threads(llama_backends.cores_for_a_load()):
            return _internals.LlamaModel(path_model=str(path), params=params, verbose=True)
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"llama.cpp could not load {path.name}: the file is corrupt, truncated, of an "
            "unsupported architecture, or too large for memory (llama.cpp's own reason is in "
            "the runner's log)."
        ) from exc
