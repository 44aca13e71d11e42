"""What a GGUF chat template says about its model: whether it takes tools, and in which syntax
the model writes its tool calls.

Only the template's source is read here (parsed, never rendered), so the library can record a
model's tool support without loading it. Rendering happens in the runner, sandboxed.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from jinja2.nodes import Name
from jinja2.sandbox import ImmutableSandboxedEnvironment


@dataclass(frozen=True)
class ToolSyntax:
    """How a model family writes tool calls: ``opener`` starts them ("" when the model answers
    with bare JSON), ``closer`` ends each one (when the family has such a marker)."""

    name: str
    opener: str = ""
    closer: str = ""


# Qwen2.5/3, Hermes 2/3, SmolLM3 and most fine-tunes:
# <tool_call>{"name": ..., "arguments": ...}</tool_call> (Qwen3-Coder: XML inside the tags)
HERMES = ToolSyntax("hermes", "<tool_call>", "</tool_call>")
# Mistral (Nemo, Small, Large): [TOOL_CALLS][{...}] or, in newer templates,
# [TOOL_CALLS]name[ARGS]{...}
MISTRAL = ToolSyntax("mistral", "[TOOL_CALLS]")
# Phi-4-mini, Granite 3: <|tool_call|>[{...}]<|/tool_call|>
TOOL_CALL_TOKEN = ToolSyntax("tool_call_token", "<|tool_call|>", "<|/tool_call|>")
# Llama 3.1-3.3 and the rest: the answer is a JSON object (or list) with "name" and "arguments"
# or "parameters", sometimes after <|python_tag|> or in a ``` fence.
BARE_JSON = ToolSyntax("json")

_MARKED = (HERMES, MISTRAL, TOOL_CALL_TOKEN)


def template_supports_tools(template: str) -> bool:
    """True when the template reads a ``tools`` variable, that is, when it can show the model
    the tools it may call.

    Read from the syntax tree only: ``jinja2.meta.find_undeclared_variables`` runs the compiler,
    whose optimizer evaluates constant expressions (``{{ 'x' * 1000000000 }}`` took 8 s and a
    gigabyte), and this runs in the daemon and the CLI."""
    try:
        parsed = ImmutableSandboxedEnvironment().parse(template)
    except jinja2.TemplateSyntaxError:
        return False
    return any(name.name == "tools" and name.ctx == "load" for name in parsed.find_all(Name))


def tool_syntax(template: str) -> ToolSyntax | None:
    """The syntax of the model's tool calls, or None when its template takes no tools."""
    if not template_supports_tools(template):
        return None
    return next((syntax for syntax in _MARKED if syntax.opener in template), BARE_JSON)
