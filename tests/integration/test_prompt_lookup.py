"""Speculative decoding by prompt lookup: it emits the model's own tokens, keeps budgets and stop
strings, leaves a clean cache behind, and is on by default only for /v1/completions.

Speculation does not promise bit-identical text to a run without it: the rows of a draft go
through llama.cpp's multi-token kernels, which round differently from one-token decoding, so
at a near-tie the two can pick different tokens. What it does promise is checked here against
a teacher-forced pass over prompt + output: each emitted token is the model's greedy choice to
within rounding. A wrong cache cell or position after a rejected draft shows up as gaps of
several logits (an off-by-one in the trimming gave 22).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import llama_cpp
import numpy as np
import pytest

from localserve.api.engine import EngineSettings
from localserve.api.sampling import SamplingParams
from localserve.runner.engine import Engine
from localserve.runner.text import GenerationStats, TextAssembler, held_back_length
from localserve.runner.weights import EngineConfig
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.model_files import starter_engine_path, starter_path
from tests.helpers.sinks import RecordingSink

FUNCTION = inspect.getsource(held_back_length)  # real code for the model to repeat
REPEAT = FUNCTION + "\n\n# The same function again, unchanged:\n" + FUNCTION.split("\n")[0] + "\n"
PROSE = "Once upon a time, in a small village by the sea, there lived"
# Repeated openings with different endings: drafts from the latest one are often wrong.
LIST = (
    "".join(
        f"Item {n}: the {word} is {n} metres long.\n"
        for n, word in enumerate(["rope", "board", "pipe", "cable", "rail", "beam"], start=1)
    )
    + "Item 7: the"
)
ROUNDING = 0.5  # logits; genuine near-ties measured here differ by at most 0.12


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path = starter_engine_path(tmp_path_factory.mktemp("engine"))
    settings = EngineSettings(ctx=1024, gpu_layers=0, threads=2)
    config = EngineConfig(starter_path(), STARTER_MODEL, settings, engine_path=path)
    engine = Engine(config)
    yield engine
    engine.close()


def generate(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, prompt: list[int], **params: Any
) -> tuple[list[int], GenerationStats]:
    """Run one request through the scheduler; return the tokens it sampled."""
    sampled: list[int] = []
    feed = TextAssembler.feed

    def recording_feed(assembler: TextAssembler, token: int) -> str:
        sampled.append(token)
        return feed(assembler, token)

    monkeypatch.setattr(TextAssembler, "feed", recording_feed)
    sink = RecordingSink(len(prompt))
    engine.submit(engine.prepare(prompt, SamplingParams(**params)), sink)
    assert sink.done.wait(120)
    monkeypatch.undo()
    assert sink.error is None
    return sampled, sink.stats


def greedy_gaps(engine: Engine, prompt: list[int], output: list[int]) -> list[float]:
    """For each output token, how far its logit is below the best one, in one batch pass."""
    model = engine._model
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 1024
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = llama_cpp.llama_init_from_model(model.model, params)
    batch = llama_cpp.llama_batch_init(1024, 0, 1)
    try:
        tokens = prompt + output
        for index, token in enumerate(tokens):
            batch.token[index] = token
            batch.pos[index] = index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = index >= len(prompt) - 1
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(ctx, batch) == 0
        vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
        gaps = []
        for offset, token in enumerate(output):
            row = llama_cpp.llama_get_logits_ith(ctx, len(prompt) - 1 + offset)
            logits = np.ctypeslib.as_array(row, shape=(vocab,))
            gaps.append(float(logits.max() - logits[token]))
        return gaps
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def emitted(output: list[int], stats: GenerationStats) -> list[int]:
    """The tokens a request emitted: a generation that ended on its own also sampled the
    end-of-generation token, which is not counted."""
    if stats.finish_reason == "stop" and len(output) == stats.completion_tokens + 1:
        return output[:-1]
    assert len(output) == stats.completion_tokens
    return output


@pytest.mark.parametrize(
    ("text", "drafts_hit"), [(REPEAT, True), (PROSE, False)], ids=["repeating code", "prose"]
)
def test_speculation_emits_the_models_greedy_tokens(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, text: str, drafts_hit: bool
) -> None:
    prompt = engine.completion_prompt(text)
    output, stats = generate(
        engine, monkeypatch, prompt, max_tokens=64, temperature=0, prompt_lookup=True
    )
    output = emitted(output, stats)
    assert len(output) >= 32
    if drafts_hit:  # repeated code: some drafts must be confirmed (prose may have none)
        assert stats.accepted_draft_tokens > 0
    gaps = greedy_gaps(engine, prompt, output)
    assert max(gaps) < ROUNDING, gaps


def test_rejected_drafts_leave_a_clean_cache(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next request reuses the slot's cells, so they must hold exactly the accepted text."""
    # Which texts get drafts rejected depends on the CPU's rounding; one of these always has.
    for text in (PROSE, REPEAT, LIST):
        prompt = engine.completion_prompt(text)
        first, stats = generate(
            engine, monkeypatch, prompt, max_tokens=48, temperature=0, prompt_lookup=True
        )
        first = emitted(first, stats)
        if stats.rejected_draft_tokens > 0:
            break
    assert stats.rejected_draft_tokens > 0
    follow_up = prompt + first + engine.completion_prompt(" The end.")[1:]
    second, stats = generate(engine, monkeypatch, follow_up, max_tokens=24, temperature=0)
    # Every token of the first request has its cell, but the last: it was sampled, never decoded.
    assert stats.cached_tokens == len(prompt) + len(first) - 1
    assert max(greedy_gaps(engine, follow_up, second)) < ROUNDING


def test_drafts_never_pass_the_token_budget(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = engine.completion_prompt(REPEAT)
    for budget in (1, 2, 7):
        output, stats = generate(
            engine, monkeypatch, prompt, max_tokens=budget, temperature=0, prompt_lookup=True
        )
        assert len(output) == stats.completion_tokens == budget
        assert stats.finish_reason == "length"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path_factory.mktemp("lookup"), "--parallel", "1") as daemon:
        daemon.wait_until_model("ready")
        yield daemon


def post(daemon: DaemonProcess, path: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{daemon.base_url}/{path}",
        headers=daemon.headers(),
        json={"model": STARTER_MODEL, "temperature": 0, **body},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def drafted(result: dict[str, Any]) -> int:
    details = result["usage"]["completion_tokens_details"]
    return int(details["accepted_prediction_tokens"] + details["rejected_prediction_tokens"])


def test_on_by_default_for_completions_off_for_chat(served: DaemonProcess) -> None:
    completion = post(served, "completions", prompt=REPEAT, max_tokens=48)
    assert drafted(completion) > 0
    assert (
        drafted(post(served, "completions", prompt=REPEAT, max_tokens=48, prompt_lookup=False)) == 0
    )
    chat = [{"role": "user", "content": "Repeat this code exactly:\n" + FUNCTION}]
    assert drafted(post(served, "chat/completions", messages=chat, max_tokens=48)) == 0
    on = post(served, "chat/completions", messages=chat, max_tokens=48, prompt_lookup=True)
    assert drafted(on) > 0


def test_stop_strings_hold_with_drafts(served: DaemonProcess) -> None:
    free = post(served, "completions", prompt=REPEAT, max_tokens=64)
    text = free["choices"][0]["text"]
    assert drafted(free) > 0
    # The first 6-character stretch after the opening that occurs nowhere earlier.
    start = next(i for i in range(20, len(text) - 6) if text.index(text[i : i + 6]) == i)
    stopped = post(
        served, "completions", prompt=REPEAT, max_tokens=64, stop=[text[start : start + 6]]
    )
    assert stopped["choices"][0]["text"] == text[:start]
    assert stopped["choices"][0]["finish_reason"] == "stop"
