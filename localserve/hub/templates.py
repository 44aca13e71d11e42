"""What a GGUF chat template says about its model: whether it takes tools, and in which syntax
the model writes its tool calls.

Only the template's source is read here (parsed, never rendered), so the library can record a
model's tool support without loading it. Rendering happens in the runner, sandboxed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.ext
from jinja2.nodes import Name
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(jinja2.ext.Extension):
    """Hugging Face's ``{% generation %}`` tag (marks assistant text for training): ignored."""

    tags = {"generation"}  # noqa: RUF012 (Jinja's own declaration)

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


# The GGUF key of the template some families (Command R, Hermes 2 Pro) use for requests with tools
TOOL_TEMPLATE_KEY = "tokenizer.chat_template.tool_use"

# What model templates use beyond plain Jinja: parsed here and rendered in the runner alike.
TEMPLATE_EXTENSIONS: list[type[jinja2.ext.Extension]] = [GenerationTag, jinja2.ext.loopcontrols]


@dataclass(frozen=True)
class ToolSyntax:
    """How a model family writes tool calls: ``opener`` starts them ("" when the model answers
    with bare JSON), ``closer`` ends each one or all of them (when the family has such a
    marker), ``inner`` are the family's other markers (separators, call delimiters, quotes).
    ``sign`` is what shows the family in a chat template's source, when not the opener."""

    name: str
    opener: str = ""
    closer: str = ""
    inner: tuple[str, ...] = ()
    sign: str = ""

    @property
    def markers(self) -> tuple[str, ...]:
        """Every marker of the syntax. Most are special tokens in the family's vocabulary,
        which the engine must keep in the text it decodes for the calls to be read."""
        return tuple(m for m in (self.opener, self.closer, *self.inner) if m)


# Qwen2.5/3, Hermes 2/3, SmolLM3 and most fine-tunes:
# <tool_call>{"name": ..., "arguments": ...}</tool_call> (Qwen3-Coder: XML inside the tags)
HERMES = ToolSyntax("hermes", "<tool_call>", "</tool_call>")
# Mistral (Nemo, Small, Large): [TOOL_CALLS][{...}] or, in newer templates,
# [TOOL_CALLS]name[ARGS]{...}
MISTRAL = ToolSyntax("mistral", "[TOOL_CALLS]")
# Phi-4-mini, Granite 3: <|tool_call|>[{...}]<|/tool_call|>
TOOL_CALL_TOKEN = ToolSyntax("tool_call_token", "<|tool_call|>", "<|/tool_call|>")
# DeepSeek R1 and its distills, V3: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function
# <｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜>, more calls after "\n", then
# <｜tool▁calls▁end｜>.
# V3.1: <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>. (The bars are full-width.)
DEEPSEEK = ToolSyntax(
    "deepseek",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    ("<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"),
)
# Gemma 4: <|tool_call>call:NAME{city:<|"|>Paris<|"|>,days:3}<tool_call|>, with its own quotes
GEMMA = ToolSyntax("gemma", "<|tool_call>", "<tool_call|>", ('<|"|>',), sign="<|tool_call>call:")
# Command R7B and Cohere2 MoE: <|START_ACTION|>[{"tool_call_id": "0", "tool_name": NAME,
# "parameters": {...}}, ...]<|END_ACTION|>
COMMAND_R = ToolSyntax("command_r", "<|START_ACTION|>", "<|END_ACTION|>")
# Command R and R+ (their tool_use templates): Action: ```json\n[{"tool_name": NAME,
# "parameters": {...}}]\n```, where the tool "directly-answer" means no call
COMMAND_R_PLUS = ToolSyntax("command_r_plus", "Action:", sign="json-formatted list of actions")
# Llama 3.1-3.3 and the rest: the answer is a JSON object (or list) with "name" and "arguments"
# or "parameters", sometimes after <|python_tag|> or in a ``` fence.
PYTHON_TAG = "<|python_tag|>"
BARE_JSON = ToolSyntax("json", inner=(PYTHON_TAG,))

# The first whose sign (or opener) is in a template is its syntax. No template in llama.cpp's
# collection shows two of them.
_MARKED = (DEEPSEEK, GEMMA, COMMAND_R, COMMAND_R_PLUS, HERMES, MISTRAL, TOOL_CALL_TOKEN)


def template_supports_tools(template: str) -> bool:
    """True when the template reads a ``tools`` variable, that is, when it can show the model
    the tools it may call.

    Read from the syntax tree only: ``jinja2.meta.find_undeclared_variables`` runs the compiler,
    whose optimizer evaluates constant expressions (``{{ 'x' * 1000000000 }}`` took 8 s and a
    gigabyte), and this runs in the daemon and the CLI."""
    try:
        parsed = ImmutableSandboxedEnvironment(extensions=TEMPLATE_EXTENSIONS).parse(template)
    except jinja2.TemplateSyntaxError:
        return False
    return any(name.name == "tools" and name.ctx == "load" for name in parsed.find_all(Name))


def tool_syntax(template: str) -> ToolSyntax | None:
    """The syntax of the model's tool calls, or None when its template takes no tools."""
    if not template_supports_tools(template):
        return None
    return next((s for s in _MARKED if (s.sign or s.opener) in template), BARE_JSON)


# -- thinking ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThinkingSyntax:
    """How a model family marks its thoughts apart from its answer: ``opener`` starts them and
    ``closer`` ends them. ``close_text`` is what the engine writes when a thinking budget runs
    out, so that the answer follows in the family's own shape."""

    name: str
    opener: str
    closer: str
    close_text: str

    @property
    def markers(self) -> tuple[str, ...]:
        return (self.opener, self.closer)


# Qwen3, QwQ, DeepSeek-R1 and its distills (whose templates open the tag in the generation
# prompt), SmolLM3, Phi-4-reasoning, GLM, Kimi...
THINK_TAGS = ThinkingSyntax("think", "<think>", "</think>", "\n</think>\n\n")
# Magistral and Ministral reasoning models
THINK_BRACKETS = ThinkingSyntax("think_brackets", "[THINK]", "[/THINK]", "\n[/THINK]")
# gpt-oss: OpenAI's harmony format, where thoughts are the "analysis" channel and the answer the
# "final" one (``runner/harmony.py`` reads it, tool calls included).
HARMONY = ThinkingSyntax(
    "harmony",
    "<|channel|>analysis<|message|>",
    "<|end|>",
    "<|end|><|start|>assistant<|channel|>final<|message|>",
)
HARMONY_MARKERS = (
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|end|>",
    "<|constrain|>",
    "<|call|>",
    "<|return|>",
)

_THINKING = (HARMONY, THINK_BRACKETS, THINK_TAGS)
_THINKING_SIGNS = {HARMONY: "<|channel|>", THINK_BRACKETS: "[THINK]", THINK_TAGS: "<think>"}


def thinking_syntax(template: str) -> ThinkingSyntax | None:
    """The family's thinking syntax, read from its template's source; None for models whose
    template shows no thoughts (they answer straight away)."""
    return next((s for s in _THINKING if _THINKING_SIGNS[s] in template), None)
