"""The engine check's decodes (``runner/engine_check.py``) on a runner's own batching context:
every batch shape that chooses a different llama.cpp kernel, and nothing left behind for the
requests that follow."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest

from localserve.api.engine import EngineSettings
from localserve.api.runner import EnginePath
from localserve.api.sampling import SamplingParams
from localserve.runner import engine_check
from localserve.runner.engine import Engine
from localserve.runner.weights import EngineConfig
from tests.helpers.daemon_process import STARTER_MODEL
from tests.helpers.model_files import starter_engine_path, starter_path
from tests.helpers.sinks import RecordingSink

Row = tuple[int, int, int, bool]  # token, position, sequence, wants logits


@pytest.fixture(scope="module")
def engine_and_path(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Engine, EnginePath]]:
    path = starter_engine_path(tmp_path_factory.mktemp("engine"))
    settings = EngineSettings(ctx=1024, gpu_layers=0, threads=2)  # the shared KV cache
    engine = Engine(EngineConfig(starter_path(), STARTER_MODEL, settings, engine_path=path))
    yield engine, path
    engine.close()


def greedy_text(engine: Engine) -> str:
    prompt = engine.completion_prompt("The three primary colours are")
    sink = RecordingSink(len(prompt))
    engine.submit(engine.prepare(prompt, SamplingParams(max_tokens=24, temperature=0)), sink)
    assert sink.done.wait(120)
    assert sink.error is None
    return "".join(sink.pieces)


def test_the_check_decodes_one_row_several_rows_and_several_sequences(
    engine_and_path: tuple[Engine, EnginePath], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AMX's VNNI kernel (one row) and tiles (two or more), repacked weights' gemv (below four
    rows) and gemm (four and more), and a batch of several sequences: each shape once."""
    engine, path = engine_and_path
    batches: list[list[Row]] = []
    decode = engine_check._Decoder.decode

    def recorded(self: engine_check._Decoder, rows: list[Row]) -> list[Any]:
        batches.append(list(rows))
        return decode(self, rows)

    monkeypatch.setattr(engine_check._Decoder, "decode", recorded)
    engine.check_decodes(path)

    prompt, step, mixed = batches
    assert len(prompt) >= 4 and {seq for _, _, seq, _ in prompt} == {0}
    assert [wants for *_, wants in prompt] == [False] * (len(prompt) - 1) + [True]
    assert len(step) == 1 and step[0][1] == len(prompt)  # the next position of sequence 0
    assert Counter(seq for _, _, seq, _ in mixed) == {0: 1, 1: 2, 2: 2, 3: 2}
    assert sum(wants for *_, wants in mixed) == 4  # the last row of each sequence


def test_the_check_leaves_an_empty_cache_and_the_same_greedy_text(
    engine_and_path: tuple[Engine, EnginePath],
) -> None:
    engine, path = engine_and_path
    before = greedy_text(engine)
    engine.check_decodes(path)
    memory = llama_cpp.llama_get_memory(engine._scheduler._ctx)
    held = [llama_cpp.llama_memory_seq_pos_max(memory, seq) for seq in range(4)]
    assert held == [-1, -1, -1, -1]  # no cells of the check's (nor of the cached prompt)
    assert greedy_text(engine) == before
    assert len(before) > 10
