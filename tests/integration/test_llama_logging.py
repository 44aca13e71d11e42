"""llama.cpp's log lines reach stderr from C: a runner's start writes about 1,100 of them (most
as its contexts are made) without taking the GIL for each (``llama_backends.log_from_c``), and
they still reach the log, the load's included: its reason for refusing a file, and the other
threads' writes while it loads (``model_file.open_model``)."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

import llama_cpp
import pytest

from localserve.api.engine import EngineSettings
from localserve.errors import ModelLoadError
from localserve.runner.weights import EngineConfig, load_weights
from tests.helpers.daemon_process import STARTER_MODEL
from tests.helpers.model_files import (
    starter_engine_path,
    starter_path,
    unknown_architecture_copy,
)


def test_llama_cpp_logs_from_c_not_through_python(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = starter_engine_path(tmp_path)
    config = EngineConfig(starter_path(), STARTER_MODEL, EngineSettings(threads=2), path)
    through_python = io.StringIO()
    real, sys.stderr = sys.stderr, through_python
    try:
        weights = load_weights(config)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = 256
        context = llama_cpp.llama_init_from_model(weights.model.model, params)
        assert context
        llama_cpp.llama_free(context)
    finally:
        sys.stderr = real
        weights.model.close()
    assert through_python.getvalue() == ""
    assert "llama_context" in capfd.readouterr().err


def test_the_load_writes_llama_cpps_reason_and_leaves_stdout_to_the_others(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """llama-cpp-python's quiet load points the process's stdout and stderr at /dev/null
    while it lasts: a runner's event channel (stdout) and its other threads' logs went there
    too, and so did llama.cpp's reason for refusing a file."""
    path = starter_engine_path(tmp_path)
    bad = unknown_architecture_copy(tmp_path / "llamx.gguf")
    config = EngineConfig(bad, "llamx", EngineSettings(threads=2), path)
    with pytest.raises(ModelLoadError, match=r"llama\.cpp could not load"):
        load_weights(config)
    assert "unknown model architecture: 'llamx'" in capfd.readouterr().err

    config = EngineConfig(starter_path(), STARTER_MODEL, EngineSettings(threads=2), path)
    loaded = threading.Event()
    lines_written: list[int] = []

    def write_while_loading() -> None:
        while not loaded.is_set():
            sys.stdout.write("event line\n")
            sys.stdout.flush()
            lines_written.append(1)
            time.sleep(0.001)

    writer = threading.Thread(target=write_while_loading)
    writer.start()
    try:
        weights = load_weights(config)
    finally:
        loaded.set()
        writer.join()
    weights.model.close()
    assert len(lines_written) >= 10  # the writer ran all through the load
    assert capfd.readouterr().out.splitlines() == ["event line"] * len(lines_written)
