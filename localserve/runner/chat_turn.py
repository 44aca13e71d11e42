"""One chat request made ready for the engine: the prompt as the model's template writes it
(with the request's thinking controls), the grammar of a forced answer, the reader that splits
the output into thought, answer and tool calls, and the plan that keeps a thought to its budget.

The request's controls map onto what templates understand: ``enable_thinking`` (Qwen3,
SmolLM3, DeepSeek V3.1, and llama.cpp's own templates) and ``reasoning_effort`` (gpt-oss's
"Reasoning: low|medium|high"); a template that reads neither thinks as it always does. A
constrained answer (a forced tool call, ``response_format``) cannot think, since the grammar
holds from the first token: the thought is switched off. When thinking is off and the template
opened a thought anyway (R1 distills), the prompt closes it, as DeepSeek advises; gpt-oss's prompt
goes straight to its final channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localserve.api.requests import ChatCompletionRequest
from localserve.errors import InvalidRequestError
from localserve.hub.templates import HARMONY, ThinkingSyntax
from localserve.runner.chat_template import RESERVED_VARIABLES
from localserve.runner.harmony import HarmonyReader, header_after_prompt
from localserve.runner.reasoning import (
    ChatOutput,
    OutputReader,
    Place,
    ThoughtPlan,
    ThoughtReader,
    place_after_prompt,
)
from localserve.runner.tools import ToolCallReader, reader_for

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar

    from localserve.runner.engine import Engine
    from localserve.runner.vision import ImagePrompt

LEVELS = ("low", "medium", "high")
OFF = ("none", "minimal")  # efforts that ask the model not to think


@dataclass(frozen=True)
class ChatTurn:
    prompt: list[int]
    grammar: LlamaGrammar | None = None  # a forced tool call's
    reader: OutputReader | None = None  # None: the output is all answer
    thought: ThoughtPlan | None = None  # None: the model does not think here
    images: ImagePrompt | None = None  # the prompt's images, when it has any


def template_variables(
    syntax: ThinkingSyntax | None, body: ChatCompletionRequest, thinks: bool
) -> dict[str, Any]:
    """The variables that carry the request's thinking controls to the template; the request's
    ``chat_template_kwargs`` have the last word."""
    effort = body.reasoning_effort
    variables: dict[str, Any] = {"enable_thinking": thinks}
    if effort in LEVELS:
        variables["reasoning_effort"] = effort
    elif effort == "xhigh":  # OpenAI's newest level; templates know three
        variables["reasoning_effort"] = "high"
    elif not thinks and syntax is HARMONY:
        variables["reasoning_effort"] = "low"  # gpt-oss always thinks: as little as it can
    kwargs = body.chat_template_kwargs or {}
    clash = sorted(RESERVED_VARIABLES & kwargs.keys())
    if clash:
        raise InvalidRequestError(
            f"chat_template_kwargs cannot set '{clash[0]}': the server sets it.",
            param="chat_template_kwargs",
        )
    return {**variables, **kwargs}


def closed_thought(syntax: ThinkingSyntax, prompt: str) -> str:
    """``prompt``, ending where the answer begins: after the thought a template opened (R1
    distills), or in gpt-oss's final channel."""
    if syntax is HARMONY:
        return prompt if prompt.endswith("<|message|>") else prompt + "<|channel|>final<|message|>"
    if place_after_prompt(syntax, prompt) is Place.INSIDE:
        return prompt + syntax.close_text.lstrip("\n")
    return prompt


def thought_place(syntax: ThinkingSyntax, prompt: str) -> Place:
    if syntax is HARMONY:
        header = header_after_prompt(prompt)
        if header is None:
            return Place.BEFORE
        return Place.INSIDE if header.channel == "analysis" else Place.AFTER
    return place_after_prompt(syntax, prompt)


def chat_turn(engine: Engine, body: ChatCompletionRequest) -> ChatTurn:
    tools = body.active_tools()
    forced = body.forced_tool() if tools else None
    form = body.response_format
    constrained = forced is not None or (form is not None and form.type != "text")
    syntax = engine.thinking
    images = [image for message in body.messages for image in message.images()]
    marker = engine.image_marker() if images else None
    messages = [message.as_template_input(marker) for message in body.messages]
    thinks = (
        not constrained and body.reasoning_effort not in OFF and body.enable_thinking is not False
    )
    text = engine.render_chat(messages, tools, template_variables(syntax, body, thinks))
    if syntax is not None and not thinks:
        text = closed_thought(syntax, text)
    grammar = (
        engine.tool_call_grammar(tools, forced or None) if tools and forced is not None else None
    )
    tool_reader: ToolCallReader | None = None
    if tools and engine.tool_syntax is not None:
        tool_reader = reader_for(
            engine.tool_syntax, tools, forced is not None, body.parallel_tool_calls
        )
    image_prompt = engine.image_prompt(text, marker, images) if marker else None
    prompt = image_prompt.tokens if image_prompt else engine.chat_tokens(text)
    if syntax is None or forced is not None:  # a forced call is bare JSON, with no thought
        output = ChatOutput(None, tool_reader) if tool_reader else None
        return ChatTurn(prompt, grammar, output, images=image_prompt)
    place = thought_place(syntax, text)
    reader = output_reader(syntax, body, text, place, tool_reader)
    watched = thinks and place is not Place.AFTER  # else the prompt closed the thought
    plan = thought_plan(engine, syntax, body, place) if watched else None
    return ChatTurn(prompt, grammar, reader, plan, image_prompt)


def output_reader(
    syntax: ThinkingSyntax,
    body: ChatCompletionRequest,
    prompt: str,
    place: Place,
    tools: ToolCallReader | None,
) -> OutputReader | None:
    """The reader for a model that may think; ``reasoning_format: none`` keeps its thoughts
    inline (a harmony model's tool calls are still read)."""
    inline = body.reasoning_format == "none"
    if syntax is HARMONY:
        if inline and tools is None:
            return None
        names = {tool["function"]["name"] for tool in body.active_tools() or []}
        return HarmonyReader(names, header_after_prompt(prompt))
    if inline:
        return ChatOutput(None, tools) if tools else None
    return ChatOutput(ThoughtReader(syntax, place), tools)


def thought_plan(
    engine: Engine, syntax: ThinkingSyntax, body: ChatCompletionRequest, place: Place
) -> ThoughtPlan:
    budget = body.thinking_budget_tokens or engine.settings.thinking_budget or None
    close = engine.chat_tokens(syntax.close_text) if budget else []
    return ThoughtPlan(syntax.opener, syntax.closer, place, budget, tuple(close))
