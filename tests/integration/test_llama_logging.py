"""llama.cpp's log lines reach stderr from C: a runner's start writes about 1,100 of them (most
as its contexts are made) without taking the GIL for each (``llama_backends.log_from_c``), and
they still reach the log."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import llama_cpp
import pytest

from localserve.api.engine import EngineSettings
from localserve.runner.weights import EngineConfig, load_weights
from tests.helpers.daemon_process import STARTER_MODEL
from tests.helpers.model_files import starter_engine_path, starter_path


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
