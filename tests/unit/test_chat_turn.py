"""A chat request's thinking controls reach real templates (Qwen3, a DeepSeek-R1 distill,
gpt-oss): the rendered prompts are compared. The engine here is the real sandboxed template
with characters for tokens, so the prompt reads back exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localserve.api.engine import EngineSettings
from localserve.api.requests import ChatCompletionRequest
from localserve.errors import InvalidRequestError
from localserve.hub.templates import ThinkingSyntax, ToolSyntax, thinking_syntax, tool_syntax
from localserve.runner.chat_template import ChatTemplate
from localserve.runner.chat_turn import ChatTurn, chat_turn
from localserve.runner.harmony import HarmonyReader
from localserve.runner.reasoning import Place

TEMPLATES = Path(__file__).parents[1] / "data" / "templates"


@dataclass
class TemplateEngine:
    """What ``chat_turn`` uses of the engine, with a real template and one token a character."""

    source: str
    settings: EngineSettings = field(default_factory=EngineSettings)
    thinking: ThinkingSyntax | None = None
    tool_syntax: ToolSyntax | None = None

    def __post_init__(self) -> None:
        self.thinking = thinking_syntax(self.source)
        self.tool_syntax = tool_syntax(self.source)
        self._template = ChatTemplate(self.source, "<eos>", "<bos>")

    def render_chat(
        self, messages: list[dict[str, Any]], tools: Any = None, extra: Any = None
    ) -> str:
        return self._template.render(messages, tools, extra)

    def chat_tokens(self, prompt: str) -> list[int]:
        return [ord(char) for char in prompt]

    def tool_call_grammar(self, tools: Any, name: str | None) -> Any:
        return "grammar"


def engine(template: str, **settings: Any) -> Any:
    return TemplateEngine((TEMPLATES / template).read_text(), EngineSettings(**settings))


def turn(model: Any, **fields: Any) -> tuple[str, ChatTurn]:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}
    )
    made = chat_turn(model, body)
    return "".join(chr(token) for token in made.prompt), made


def test_qwen3_enable_thinking_reaches_the_template() -> None:
    qwen3 = engine("qwen3.jinja")
    thinking, made = turn(qwen3)
    assert thinking.endswith("<|im_start|>assistant\n")
    assert made.thought is not None and made.thought.place is Place.BEFORE
    for off in (
        {"reasoning_effort": "none"},
        {"enable_thinking": False},  # as the Anthropic and Ollama translators ask
        {"chat_template_kwargs": {"enable_thinking": False}},
    ):
        quiet, made = turn(qwen3, **off)
        assert quiet == thinking + "<think>\n\n</think>\n\n"
    assert made.thought is None  # nothing to watch: the prompt closed the thought


def test_r1_thinking_off_closes_the_thought_the_template_opens() -> None:
    r1 = engine("deepseek-r1-distill-qwen.jinja", thinking_budget=16)
    thinking, made = turn(r1)
    assert thinking.endswith("<｜Assistant｜><think>\n")
    assert made.thought is not None and made.thought.place is Place.INSIDE
    assert made.thought.budget == 16 and made.thought.close_tokens
    quiet, made = turn(r1, reasoning_effort="none")
    assert quiet == thinking + "</think>\n\n" and made.thought is None
    # A constrained answer cannot think either: the grammar holds from the first token.
    constrained, _ = turn(r1, response_format={"type": "json_object"})
    assert constrained == quiet


def test_a_request_budget_takes_the_settings_place() -> None:
    r1 = engine("deepseek-r1-distill-qwen.jinja", thinking_budget=16)
    _, made = turn(r1, thinking_budget_tokens=3)
    assert made.thought is not None and made.thought.budget == 3
    _, unlimited = turn(engine("deepseek-r1-distill-qwen.jinja"))
    assert unlimited.thought is not None and unlimited.thought.budget is None


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_gpt_oss_reasoning_effort_reaches_the_template(effort: str) -> None:
    prompt, made = turn(engine("gpt-oss.jinja"), reasoning_effort=effort)
    assert f"Reasoning: {effort}\n" in prompt
    assert prompt.endswith("<|start|>assistant")
    assert isinstance(made.reader, HarmonyReader)


def test_gpt_oss_without_thinking_answers_in_its_final_channel() -> None:
    prompt, made = turn(engine("gpt-oss.jinja"), reasoning_effort="none")
    assert "Reasoning: low\n" in prompt  # as little as it can
    assert prompt.endswith("<|start|>assistant<|channel|>final<|message|>")
    assert made.thought is None


def test_earlier_thoughts_are_kept_or_dropped_as_the_template_expects() -> None:
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": "A greeting."},
        {"role": "user", "content": "Bye"},
    ]
    qwen3, _ = turn(engine("qwen3.jinja"), messages=history)
    assert "A greeting." not in qwen3  # Qwen3 drops thoughts before the last question
    last = [*history[:2]]
    kept, _ = turn(engine("qwen3.jinja"), messages=[*last, {"role": "tool", "content": "x"}])
    assert "<think>\nA greeting.\n</think>" in kept  # ... and keeps them within a tool loop
    r1, _ = turn(engine("deepseek-r1-distill-qwen.jinja"), messages=history)
    assert "A greeting." not in r1 and "Hello!" in r1


def test_template_kwargs_cannot_replace_what_the_server_sets() -> None:
    with pytest.raises(InvalidRequestError, match="messages"):
        turn(engine("qwen3.jinja"), chat_template_kwargs={"messages": []})


def test_a_model_that_does_not_think_gets_no_plan() -> None:
    prompt, made = turn(engine("qwen2.5-instruct.jinja"), reasoning_effort="high")
    assert made.thought is None and made.reader is None
    assert prompt.endswith("<|im_start|>assistant\n")


def test_xhigh_reaches_a_template_as_high() -> None:
    prompt, _ = turn(engine("gpt-oss.jinja"), reasoning_effort="xhigh")
    assert "Reasoning: high\n" in prompt
