"""A model's chat template, rendered in a sandbox with limits.

Templates come from model files, which anyone can publish. Jinja's immutable sandbox stops them
reaching Python's internals (CVE-2024-34359); the limits here stop them taking the runner's
memory or time: repetition that would build a huge value is refused, the output is capped, and
a render that runs past its time budget (a nested loop) is stopped. A failed render fails that
request only.

It renders with the same variables and filters as llama-cpp-python's ``Jinja2ChatFormatter``
(and Hugging Face's), whose environment cannot be given these limits.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from types import FrameType
from typing import Any

import jinja2
import jinja2.ext
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT_CHARS = 8 * 2**20  # far beyond any context window: 8 MiB of prompt text
MAX_RENDER_SECONDS = 2.0
MAX_EXPONENT = 64


class TemplateLimitError(Exception):
    """The template went past a limit while rendering."""


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's ``tojson``: plain JSON, not HTML-escaped as Jinja's own."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


class _GenerationTag(jinja2.ext.Extension):
    """Hugging Face's ``{% generation %}`` tag (marks assistant text for training): ignored."""

    tags = {"generation"}  # noqa: RUF012 (Jinja's own declaration)

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is over the template limit of {MAX_EXPONENT}")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                repeats = isinstance(sequence, (str, list, tuple)) and isinstance(times, int)
                if repeats and len(sequence) * times > MAX_OUTPUT_CHARS:
                    raise SecurityError("repetition builds a value over the template limit")
        return super().call_binop(context, operator, left, right)


class ChatTemplate:
    def __init__(self, source: str, eos_token: str, bos_token: str) -> None:
        environment = _LimitedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_GenerationTag, jinja2.ext.loopcontrols],
        )
        environment.filters["tojson"] = _tojson
        self._template = environment.from_string(source)
        self._eos_token = eos_token
        self._bos_token = bos_token

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        def raise_exception(message: str) -> None:
            raise ValueError(message)

        variables = {
            "messages": messages,
            "tools": tools,
            "eos_token": self._eos_token,
            "bos_token": self._bos_token,
            "add_generation_prompt": True,
            "raise_exception": raise_exception,
            "strftime_now": lambda fmt: datetime.now().strftime(fmt),
        }
        return _render_with_limits(self._template, variables)


def _render_with_limits(template: jinja2.Template, variables: dict[str, Any]) -> str:
    deadline = time.monotonic() + MAX_RENDER_SECONDS

    def budget(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise TemplateLimitError(f"rendering took over {MAX_RENDER_SECONDS:.0f} s")
        return budget

    pieces: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(budget)
    try:
        for piece in template.generate(**variables):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateLimitError(f"its output passed {MAX_OUTPUT_CHARS:,} characters")
            pieces.append(piece)
    finally:
        sys.settrace(previous)
    return "".join(pieces)
