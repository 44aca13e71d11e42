"""Thoughts read apart from the answer, for each family's syntax, fed in 1-, 3- and
whole-text pieces (as tokens arrive), and the engine's thought watch that enforces a budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from localserve.hub.templates import (
    HARMONY,
    THINK_BRACKETS,
    THINK_TAGS,
    ThinkingSyntax,
    thinking_syntax,
)
from localserve.runner.harmony import HarmonyReader, Header, header_after_prompt
from localserve.runner.reasoning import (
    ChatOutput,
    OutputReader,
    Place,
    Split,
    ThoughtPlan,
    ThoughtReader,
    ThoughtWatch,
    place_after_prompt,
)
from localserve.runner.tools import ToolCall, ToolCallReader

TEMPLATES = Path(__file__).parents[1] / "data" / "templates"
SIZES = [1, 3, 10_000]


def read(reader: OutputReader, text: str, size: int) -> tuple[Split, list[ToolCall]]:
    total = Split()
    for start in range(0, len(text), size):
        total += reader.feed(text[start : start + size])
    rest, calls = reader.finish()
    return total + rest, calls


def thought(
    syntax: ThinkingSyntax, place: Place, tools: ToolCallReader | None = None
) -> ChatOutput:
    return ChatOutput(ThoughtReader(syntax, place), tools)


@pytest.mark.parametrize(
    ("template", "syntax"),
    [
        ("qwen3.jinja", THINK_TAGS),
        ("deepseek-r1-distill-qwen.jinja", THINK_TAGS),
        ("gpt-oss.jinja", HARMONY),
        ("ministral-3-reasoning.jinja", THINK_BRACKETS),
        ("qwen2.5-instruct.jinja", None),
        ("llama3.1-instruct.jinja", None),
    ],
)
def test_thinking_syntax_is_read_from_the_template(template: str, syntax: object) -> None:
    assert thinking_syntax((TEMPLATES / template).read_text()) == syntax


@pytest.mark.parametrize("size", SIZES)
def test_a_thought_the_model_opens_is_apart_from_the_answer(size: int) -> None:
    text = "<think>\nThe user greets me.\n\nBe brief.\n</think>\n\nHello there!"
    split, calls = read(thought(THINK_TAGS, Place.BEFORE), text, size)
    assert split == Split("The user greets me.\n\nBe brief.", "Hello there!")
    assert calls == []


@pytest.mark.parametrize("size", SIZES)
def test_a_thought_the_prompt_opened_ends_at_the_closer(size: int) -> None:
    """R1 distills: the template ends the prompt with <think>, the model writes no opener."""
    split, _ = read(thought(THINK_TAGS, Place.INSIDE), "Two plus two.\n</think>\n\n4", size)
    assert split == Split("Two plus two.", "4")


@pytest.mark.parametrize("size", SIZES)
def test_an_answer_without_a_thought_is_all_answer(size: int) -> None:
    text = "  Hello <think> is only a word here"
    split, _ = read(thought(THINK_TAGS, Place.BEFORE), text, size)
    assert split == Split("", text)
    closed, _ = read(thought(THINK_TAGS, Place.AFTER), "<think>x</think>y", size)
    assert closed == Split("", "<think>x</think>y")  # the prompt closed the thought already


@pytest.mark.parametrize("size", SIZES)
def test_an_unclosed_thought_stays_thought(size: int) -> None:
    split, _ = read(thought(THINK_TAGS, Place.INSIDE), "still thinking </thi", size)
    assert split == Split("still thinking </thi", "")


@pytest.mark.parametrize("size", SIZES)
def test_bracket_thoughts(size: int) -> None:
    split, _ = read(thought(THINK_BRACKETS, Place.BEFORE), "[THINK]hmm[/THINK]Answer.", size)
    assert split == Split("hmm", "Answer.")


@pytest.mark.parametrize("size", SIZES)
def test_a_tool_call_after_a_thought(size: int) -> None:
    from localserve.hub.templates import HERMES

    text = (
        "<think>I need the weather.</think>\n\nLet me check."
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    tools = ToolCallReader(HERMES, {"get_weather"})
    split, calls = read(thought(THINK_TAGS, Place.BEFORE, tools), text, size)
    assert split == Split("I need the weather.", "Let me check.")
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]


def test_place_after_the_prompt() -> None:
    assert place_after_prompt(THINK_TAGS, "<｜Assistant｜><think>\n") is Place.INSIDE
    assert place_after_prompt(THINK_TAGS, "assistant\n<think>\n\n</think>\n\n") is Place.AFTER
    assert place_after_prompt(THINK_TAGS, "<|im_start|>assistant\n") is Place.BEFORE


HARMONY_ANSWER = (
    "<|channel|>analysis<|message|>User asks the weather. Call the tool.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city": "Paris"}<|call|>'
)


@pytest.mark.parametrize("size", SIZES)
def test_harmony_thought_and_answer(size: int) -> None:
    text = (
        "<|channel|>analysis<|message|>Simple greeting.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hi! How can I help?<|return|>"
    )
    split, calls = read(HarmonyReader(set()), text, size)
    assert split == Split("Simple greeting.", "Hi! How can I help?")
    assert calls == []


@pytest.mark.parametrize("size", SIZES)
def test_harmony_tool_call(size: int) -> None:
    split, calls = read(HarmonyReader({"get_weather"}), HARMONY_ANSWER, size)
    assert split == Split("User asks the weather. Call the tool.", "")
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]


@pytest.mark.parametrize("size", SIZES)
def test_harmony_calls_to_unknown_tools_or_bad_json_are_kept_as_text(size: int) -> None:
    split, calls = read(HarmonyReader(set()), HARMONY_ANSWER, size)
    assert calls == [] and split.content == '{"city": "Paris"}'
    broken = HARMONY_ANSWER.replace('{"city": "Paris"}', '{"city": ')
    split, calls = read(HarmonyReader({"get_weather"}), broken, size)
    assert calls == [] and split.content == '{"city":'


@pytest.mark.parametrize("size", SIZES)
def test_harmony_without_headers_is_plain_answer(size: int) -> None:
    split, _ = read(HarmonyReader(set()), "Just text, no channels.", size)
    assert split == Split("", "Just text, no channels.")


def test_harmony_header_the_prompt_left_open() -> None:
    prompt = "<|start|>user<|message|>hi<|end|><|start|>assistant<|channel|>final<|message|>"
    assert header_after_prompt(prompt) == Header("final")
    assert header_after_prompt("<|start|>assistant") is None
    split, _ = read(HarmonyReader(set(), Header("final")), "Hello.<|return|>", 1)
    assert split == Split("", "Hello.")


def watch_tokens(watch: ThoughtWatch, pieces: list[str]) -> list[tuple[int, ...]]:
    return [watch.after_token(piece) for piece in pieces]


def test_the_watch_counts_thought_tokens_and_closes_at_the_budget() -> None:
    plan = ThoughtPlan("<think>", "</think>", Place.INSIDE, budget=3, close_tokens=(7, 8))
    watch = ThoughtWatch(plan)
    assert watch_tokens(watch, ["a", "b", "c", "d"]) == [(), (), (7, 8), ()]
    assert watch.tokens == 3


def test_the_watch_sees_a_thought_open_and_close() -> None:
    plan = ThoughtPlan("<think>", "</think>", Place.BEFORE, budget=100)
    watch = ThoughtWatch(plan)
    watch_tokens(watch, ["<th", "ink>", "x", "y", "</th", "ink>", "answer", "more"])
    assert watch.tokens == 4  # x, y and the two pieces of the closer


def test_the_watch_ignores_an_answer_without_a_thought() -> None:
    plan = ThoughtPlan("<think>", "</think>", Place.BEFORE, budget=1, close_tokens=(1,))
    watch = ThoughtWatch(plan)
    assert watch_tokens(watch, ["Hello", " <think>", "x", "y"]) == [(), (), (), ()]
    assert watch.tokens == 0
