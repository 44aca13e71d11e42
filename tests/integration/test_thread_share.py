"""A runner's engine applies the daemon's thread grant before its next decode, in the batch loop
and in the embedding context, and reports each change (the pool waits for that report)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest

from localserve.api.engine import EngineSettings
from localserve.api.sampling import SamplingParams
from localserve.runner.commands import ThreadShare
from localserve.runner.engine import Engine
from localserve.runner.weights import EngineConfig
from tests.helpers.daemon_process import STARTER_MODEL
from tests.helpers.model_files import starter_engine_path, starter_path
from tests.helpers.sinks import RecordingSink


@pytest.fixture(scope="module")
def engine_and_share(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Engine, ThreadShare]]:
    share = ThreadShare(2)
    path = starter_engine_path(tmp_path_factory.mktemp("engine"))
    settings = EngineSettings(ctx=512, gpu_layers=0, threads=2)
    config = EngineConfig(starter_path(), STARTER_MODEL, settings, engine_path=path)
    engine = Engine(config, share)
    yield engine, share
    engine.close()


def generate(engine: Engine, max_tokens: int = 4) -> None:
    prompt = engine.completion_prompt("1, 2, 3,")
    sink = RecordingSink(len(prompt))
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    engine.submit(engine.prepare(prompt, params), sink)
    assert sink.done.wait(60) and sink.error is None


def test_the_batch_loop_applies_a_grant_and_reports_it(
    engine_and_share: tuple[Engine, ThreadShare],
) -> None:
    engine, share = engine_and_share
    reports: list[dict[str, Any]] = []
    share.report = reports.append
    context = engine._scheduler._ctx
    assert llama_cpp.llama_n_threads(context) == 2
    share.grant(1)
    assert reports == []  # nothing applies until the next decode
    generate(engine)
    assert llama_cpp.llama_n_threads(context) == 1
    assert llama_cpp.llama_n_threads_batch(context) == 1
    assert reports == [{"event": "threads", "threads": 1}]
    generate(engine)
    assert len(reports) == 1  # an unchanged grant is not applied or reported again
    share.grant(2)
    generate(engine)
    assert llama_cpp.llama_n_threads(context) == 2
    assert reports[-1] == {"event": "threads", "threads": 2}


def test_the_embedding_context_applies_a_grant_and_reports_it(
    engine_and_share: tuple[Engine, ThreadShare],
) -> None:
    engine, share = engine_and_share
    reports: list[dict[str, Any]] = []
    share.report = reports.append
    share.grant(1)
    vectors, _count = engine.embed(["hello"])
    assert len(vectors) == 1
    context = engine._embedder.context()  # made by that first request for embeddings
    assert llama_cpp.llama_n_threads(context) == 1
    assert reports == [{"event": "threads", "threads": 1}]
