"""A model's chat template, rendered in a sandbox with limits.

Templates come from model files, which anyone can publish. Jinja's immutable sandbox stops them
reaching Python's internals (CVE-2024-34359); the limits here stop them taking the runner's
memory or time: nothing is evaluated while compiling, repetition, padding and replacing that
would build a huge value are refused, the output is capped, and a render that runs past its time
budget (a nested loop) is stopped. A failed render fails that
request only.

It renders with the same variables and filters as llama-cpp-python's ``Jinja2ChatFormatter``
(and Hugging Face's), whose environment cannot be given these limits.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from types import FrameType
from typing import Any

import jinja2
import jinja2.ext
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localserve.hub.templates import TEMPLATE_EXTENSIONS

MAX_OUTPUT_CHARS = 8 * 2**20  # far beyond any context window: 8 MiB of prompt text
MAX_RENDER_SECONDS = 2.0
MAX_EXPONENT = 64


# Set by the renderer itself; a request's chat_template_kwargs cannot replace them.
RESERVED_VARIABLES = frozenset(
    {
        "messages",
        "tools",
        "eos_token",
        "bos_token",
        "add_generation_prompt",
        "raise_exception",
        "strftime_now",
    }
)


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


# A width or precision of 8 digits or more in a conversion ("%100000000s", "{:>100000000}")
# pads one value past MAX_OUTPUT_CHARS in a single call.
_HUGE_PRINTF_WIDTH = re.compile(r"%[-+ #0]*(\d{8,}|\d*\.\d{8,})")
_HUGE_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*\d{8,}[^{}]*\}")


def _check_numbers(args: Iterable[Any]) -> None:
    """Refuse a width, count or length beyond the output cap: one call would build a value
    that large before the cap could see it."""
    for value in args:
        if isinstance(value, int) and abs(value) > MAX_OUTPUT_CHARS:
            raise SecurityError(f"{value} is over the template limit of {MAX_OUTPUT_CHARS:,}")


# Widths taken from the arguments: "%*s", "%.*s", "{:>{}}".
_WIDTH_FROM_ARGUMENT = re.compile(r"%[-+ #0]*\d*\.?\*|\{[^{}]*:[^{}]*\{")


def _check_format(text: Any, args: Iterable[Any]) -> None:
    """Refuse formatting that pads a value past the cap. The arguments are checked only where
    the format string takes a width from them; elsewhere a large number is just a value."""
    if not isinstance(text, str):
        return
    if _HUGE_PRINTF_WIDTH.search(text) or _HUGE_FORMAT_WIDTH.search(text):
        raise SecurityError("a format width is over the template limit")
    if _WIDTH_FROM_ARGUMENT.search(text):
        _check_numbers(args)


def _check_replace(value: Any, old: Any = None, new: Any = None, count: Any = None) -> None:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        hits = value.count(old) if count is None else min(int(count), value.count(old))
        if len(value) + hits * (len(new) - len(old)) > MAX_OUTPUT_CHARS:
            raise SecurityError("replace builds a value over the template limit")


def _check_indent(value: Any, width: Any = 4, *_flags: Any, **_named: Any) -> None:
    if isinstance(value, str) and isinstance(width, (int, str)):
        per_line = len(width) if isinstance(width, str) else width
        if len(value) + per_line * (value.count("\n") + 1) > MAX_OUTPUT_CHARS:
            raise SecurityError("indent builds a value over the template limit")


def _size_checked(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a filter), refusing first the arguments that make its output huge."""
    takes_context = getattr(function, "jinja_pass_arg", None) is not None

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        value, *rest = args[1:] if takes_context else args
        if name == "format":
            _check_format(value, [*rest, *kwargs.values()])
        else:
            _check_numbers([*rest, *kwargs.values()])
        if name == "replace":
            _check_replace(value, *rest, **kwargs)
        if name == "indent":
            _check_indent(value, *rest, **kwargs)
        return function(*args, **kwargs)

    return checked


# Filters whose output can be far larger than their input.
_GROWING_FILTERS = ("center", "indent", "format", "replace")


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is over the template limit of {MAX_EXPONENT}")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                repeats = isinstance(sequence, (str, list, tuple)) and isinstance(times, int)
                if repeats and len(sequence) * times > MAX_OUTPUT_CHARS:
                    raise SecurityError("repetition builds a value over the template limit")
        if operator == "%" and isinstance(left, str):  # printf-style formatting
            _check_format(left, right if isinstance(right, tuple) else (right,))
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``"...".format(...)``: the format string and arguments are checked first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(text, [*args, *kwargs.values()])
            return wrapped(*args, **kwargs)

        return checked


class ChatTemplate:
    def __init__(self, source: str, eos_token: str, bos_token: str) -> None:
        environment = _LimitedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=TEMPLATE_EXTENSIONS,
            # Jinja's optimizer evaluates constant expressions while compiling, before any
            # limit applies: {{ 'x'|center(300000000) }} cost 1.1 GiB and 6 s at load.
            optimized=False,
        )
        for name in _GROWING_FILTERS:
            environment.filters[name] = _size_checked(name, environment.filters[name])
        environment.filters["tojson"] = _tojson
        self._template = environment.from_string(source)
        self._eos_token = eos_token
        self._bos_token = bos_token

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """``extra`` are further variables (``enable_thinking``, a request's
        ``chat_template_kwargs``); they cannot replace the ones set here."""

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        variables = {
            **(extra or {}),
            "messages": messages,
            "tools": tools,
            "eos_token": self._eos_token,
            "bos_token": self._bos_token,
            "add_generation_prompt": True,
            "raise_exception": raise_exception,
            "strftime_now": lambda fmt: datetime.now().strftime(fmt),
        }
        clash = sorted(set(extra or {}) & RESERVED_VARIABLES)
        if clash:
            raise ValueError(f"chat_template_kwargs cannot set '{clash[0]}'")
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
