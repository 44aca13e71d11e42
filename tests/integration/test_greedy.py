"""Greedy requests skip llama.cpp's sampler chain (``Scheduler._argmax``): the same text as the
chain's greedy sampler, on one sequence and among others, and the chain still serves the rest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from localserve.api.engine import EngineSettings
from localserve.api.sampling import SamplingParams
from localserve.runner import scheduler
from localserve.runner.engine import Engine
from localserve.runner.weights import EngineConfig
from tests.helpers.daemon_process import STARTER_MODEL
from tests.helpers.model_files import starter_engine_path, starter_path
from tests.helpers.sinks import RecordingSink

PROMPTS = ["Once upon a time, in a small village by the sea,", "def fibonacci(n):", "1, 2, 3,"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path = starter_engine_path(tmp_path_factory.mktemp("engine"))
    settings = EngineSettings(ctx=1024, gpu_layers=0, threads=2, batch_exact=True)
    engine = Engine(EngineConfig(starter_path(), STARTER_MODEL, settings, engine_path=path))
    yield engine
    engine.close()


def generate_together(engine: Engine, **params: Any) -> list[str]:
    """Every prompt at once (a batch of several sequences); their texts."""
    sinks = []
    for text in PROMPTS:
        prompt = engine.completion_prompt(text)
        sink = RecordingSink(len(prompt))
        engine.submit(engine.prepare(prompt, SamplingParams(max_tokens=48, **params)), sink)
        sinks.append(sink)
    for sink in sinks:
        assert sink.done.wait(120)
        assert sink.error is None
    return ["".join(sink.pieces) for sink in sinks]


def test_plain_greedy_is_only_greedy_with_neutral_penalties() -> None:
    assert scheduler.plain_greedy(SamplingParams(temperature=0))
    assert not scheduler.plain_greedy(SamplingParams(temperature=0.7))
    assert not scheduler.plain_greedy(SamplingParams(temperature=0, repeat_penalty=1.1))
    assert not scheduler.plain_greedy(SamplingParams(temperature=0, frequency_penalty=0.5))
    assert not scheduler.plain_greedy(SamplingParams(temperature=0, presence_penalty=0.5))


def test_the_argmax_writes_what_the_sampler_chain_writes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    argmaxes: list[int] = []
    argmax = scheduler.Scheduler._argmax

    def counted(self: scheduler.Scheduler, row: int) -> int:
        argmaxes.append(row)
        return argmax(self, row)

    monkeypatch.setattr(scheduler.Scheduler, "_argmax", counted)
    fast = generate_together(engine, temperature=0)
    assert len(argmaxes) >= 3 * 40  # every token of the three came from the argmax
    # One numpy view per logits row address, made once and read again at later steps: at most
    # a row a stream while generating, and the rows of the prompts' last tokens.
    views = engine._scheduler._logits_rows
    assert 0 < len(views) <= 2 * len(PROMPTS)

    monkeypatch.setattr(scheduler, "plain_greedy", lambda params: False)
    argmaxes.clear()
    chain = generate_together(engine, temperature=0)
    assert not argmaxes
    assert fast == chain
    assert all(len(text) > 20 for text in fast)


def test_penalties_still_go_through_the_chain(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frequency penalty changes the answers, so the chain, not the argmax, must have run."""
    plain = generate_together(engine, temperature=0)
    monkeypatch.setattr(scheduler.Scheduler, "_argmax", lambda self, row: pytest.fail("argmax"))
    penalised = generate_together(engine, temperature=0, frequency_penalty=2.0)
    assert penalised != plain
