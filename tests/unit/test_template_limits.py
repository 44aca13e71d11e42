"""Chat templates from model files cannot make localserve build huge values: not while the
daemon reads a template for tool support, not while a runner compiles it, and not while it
renders (padding, formatting and replacing are refused before they allocate)."""

from __future__ import annotations

import resource
import time

import pytest
from jinja2.exceptions import SecurityError

from localserve.hub.templates import template_supports_tools
from localserve.runner.chat_template import ChatTemplate

END = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
MESSAGES = [{"role": "user", "content": "hi"}]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def render(source: str, content: str = "hi") -> str:
    template = ChatTemplate(source, "</s>", "<s>")
    return template.render([{"role": "user", "content": content}])


# Each is a value of 300 MB or more, which Jinja's optimizer would build while compiling.
BOMBS = [
    "{{ 'x' * 300000000 }}",
    "{{ 'x'|center(300000000) }}",
    "{% set a = 'x'|indent(300000000, true) %}{{ a }}",
    "{{ '%300000000s'|format('x') }}",
    "{{ '%300000000s' % 'x' }}",
    "{{ '{:>300000000}'.format('x') }}",
    "{{ '%*s' % (300000000, 'x') }}",
    "{{ '{:>{}}'.format('x', 300000000) }}",
    "{{ ('x' * 8000000)|replace('x', 'yy') }}",
    "{{ ('x\n' * 4000000)|indent(100) }}",
]


@pytest.mark.parametrize("bomb", BOMBS)
def test_huge_values_are_refused_without_being_built(bomb: str) -> None:
    before, started = peak_rss_mib(), time.monotonic()
    assert not template_supports_tools(bomb + END)
    template = ChatTemplate(bomb + END, "</s>", "<s>")
    with pytest.raises(SecurityError, match="template limit"):
        template.render(MESSAGES)
    assert time.monotonic() - started < 2
    assert peak_rss_mib() - before < 100  # the cap is 8 MiB of text


def test_ordinary_formatting_still_works() -> None:
    source = (
        "{{ '%d:%s'|format(1700000000, 'a') }} {{ '%5s' % 'b' }} {{ '{:>4}|{}'.format('c', "
        "123456789) }} {{ 'x y'|replace(' ', '_') }} {{ 'z'|center(5) }}{{ 7 % 3 }}" + END
    )
    assert render(source, "Call 123456789") == (
        "1700000000:a     b    c|123456789 x_y   z  1Call 123456789"
    )
