"""Embeddings on the runner's own embedding context (runner/embeddings.py): made at the first
request for them, and the same vectors the binding's ``Llama.embed`` gives."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from localserve.api.engine import EngineSettings
from localserve.errors import InvalidRequestError
from localserve.runner import llama_backends
from localserve.runner.engine import Engine
from localserve.runner.weights import EngineConfig
from tests.helpers.daemon_process import STARTER_MODEL
from tests.helpers.model_files import starter_engine_path, starter_path

TEXTS = ["The capital of France is Paris.", "def add(a, b):\n    return a + b"]


def test_embeddings_match_the_binding_and_their_context_is_made_when_first_asked(
    tmp_path: Path,
) -> None:
    path = starter_engine_path(tmp_path)  # loads the CPU variant for in-process engines
    settings = EngineSettings(ctx=512, gpu_layers=0, threads=2)
    engine = Engine(EngineConfig(starter_path(), STARTER_MODEL, settings, engine_path=path))
    try:
        assert engine._embedder._ctx is None  # loading a model made no embedding context
        vectors, count = engine.embed(TEXTS)
        assert engine._embedder._ctx is not None

        # The engine check's path for the reference too: llama.cpp's default AMX kernels
        # crash on Sapphire Rapids class CPUs.
        with llama_backends.extra_buffer_types(path.extra_buffers):
            reference = llama_cpp.Llama(
                model_path=str(starter_path()),
                embedding=True,
                n_ctx=512,
                n_threads=2,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                verbose=False,
            )
        # One text per decode, as the engine embeds them: llama.cpp's AMX kernels choose their
        # code by the rows in a batch, so two texts in one batch differ in the 4th decimal.
        answers = [reference.embed(text, normalize=True, return_count=True) for text in TEXTS]
        reference.close()
        expected = [vector for vector, _ in answers]
        expected_count = sum(count for _, count in answers)
        assert count == expected_count
        assert len(vectors) == len(expected) == 2
        for mine, theirs in zip(vectors, expected, strict=True):
            assert len(mine) == len(theirs) == engine._model.n_embd()
            assert max(abs(a - b) for a, b in zip(mine, theirs, strict=True)) < 1e-6
        assert abs(sum(value * value for value in vectors[0]) - 1.0) < 1e-4
        assert vectors[0] != vectors[1]

        with pytest.raises(InvalidRequestError, match="Input 1 is empty"):
            engine.embed(["hello", ""])
        with pytest.raises(InvalidRequestError, match="at most 512"):
            engine.embed(["word " * 600])
    finally:
        engine.close()
