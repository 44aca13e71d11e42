"""Tool calls: the schema that forces one, and reading calls back out of what a model wrote.

A model shows its tool calls in its family's syntax (``hub/templates.py``). ``ToolCallReader``
lets prose through as it is generated, holding back only what may be the start of a call, and
reads the calls when generation ends. Text that looked like a call but does not parse as one
is handed back as content: nothing the model wrote is lost. (No llama.cpp here: the gateway
uses these shapes too.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localserve.api.ids import new_call_id
from localserve.hub.templates import BARE_JSON, DEEPSEEK, GEMMA, PYTHON_TAG, ToolSyntax
from localserve.runner.text import held_back_length

_DECODER = json.JSONDecoder()
_FENCES = ("```json", "```")
_END_OF_SENTENCE = "<｜end▁of▁sentence｜>"  # DeepSeek's, should it be decoded after the calls
# Newer Mistral templates: [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}
_NAMED_ARGS = re.compile(r"([A-Za-z0-9_.\-]+)\s*\[ARGS\]")
_SEPARATORS = " \t\r\n,;"
# Qwen3-Coder and Qwen3.5 write XML inside <tool_call>:
# <function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>
_XML_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)</function>", re.S)
_XML_PARAMETER = re.compile(r"<parameter=([^>\s]+)>\n?(.*?)\n?</parameter>", re.S)
# DeepSeek: <｜tool▁call▁begin｜>HEAD<｜tool▁sep｜>BODY<｜tool▁call▁end｜>, where R1 and V3 write
# the type as HEAD and NAME\n```json\n{...}\n``` as BODY, V3.1 the name and the arguments.
_DEEPSEEK_CALL = re.compile("(.*?)".join(map(re.escape, DEEPSEEK.inner)), re.S)
# Gemma 4: call:get_weather{city:<|"|>Paris<|"|>,days:3} between <|tool_call> and <tool_call|>
_GEMMA_CALL = re.compile(r"call:([^{}\s]+)\{")
_GEMMA_KEY = re.compile(r"([^:}]+):")
(_GEMMA_QUOTE,) = GEMMA.inner

_ItemReader = Callable[[str, int], tuple[Any, int]]


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as OpenAI sends it
    id: str = field(default_factory=new_call_id)

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def forced_call_schema(tools: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    """The JSON schema of a call, ``{"name": ..., "arguments": ...}``, to the tool ``name`` or,
    when it is None (``tool_choice: required``), to any of ``tools``."""
    options = []
    for tool in tools:
        function = tool["function"]
        if name is not None and function["name"] != name:
            continue
        parameters = function.get("parameters") or {"type": "object"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"oneOf": options}


def _skip_noise(text: str, pos: int, syntax: ToolSyntax) -> int:
    """Past separators, markers and fences between calls."""
    markers = [
        m for m in (syntax.opener, syntax.closer, PYTHON_TAG, _END_OF_SENTENCE, *_FENCES) if m
    ]
    while pos < len(text):
        if text[pos] in _SEPARATORS:
            pos += 1
            continue
        marker = next((m for m in markers if text.startswith(m, pos)), None)
        if marker is None:
            break
        pos += len(marker)
    return pos


def _call_from(item: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):  # OpenAI's own shape, which some models echo
        item = item["function"]
    name = item.get("name", item.get("tool_name"))  # Command R: tool_name and parameters
    arguments = item.get("arguments", item.get("parameters", {}))
    if not isinstance(name, str) or name not in names:
        return None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(name, json.dumps(arguments, ensure_ascii=False))


def _xml_call(match: re.Match[str]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for parameter in _XML_PARAMETER.finditer(match.group(2)):
        raw = parameter.group(2)
        try:
            arguments[parameter.group(1)] = json.loads(raw)  # numbers, booleans, objects
        except ValueError:
            arguments[parameter.group(1)] = raw
    return {"name": match.group(1), "arguments": arguments}


def _json_item(text: str, pos: int) -> tuple[Any, int]:
    """A JSON call or list of calls, Mistral's NAME[ARGS]{...}, or Qwen3-Coder's XML."""
    xml = _XML_FUNCTION.match(text, pos)
    if xml:
        return _xml_call(xml), xml.end()
    named = _NAMED_ARGS.match(text, pos)
    if named:
        arguments, end = _DECODER.raw_decode(text, named.end())
        return {"name": named.group(1), "arguments": arguments}, end
    return _DECODER.raw_decode(text, pos)


def _deepseek_item(text: str, pos: int) -> tuple[Any, int]:
    call = _DEEPSEEK_CALL.match(text, pos)
    if call is None:
        raise ValueError("no DeepSeek call here")
    name, body = call.group(1), call.group(2).strip()
    if not body.startswith(("{", "`")):  # R1 and V3: the type came first, the name is here
        name, _, body = body.partition("\n")
    body = body.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    return {"name": name.strip(), "arguments": json.loads(body)}, call.end()


def _gemma_item(text: str, pos: int) -> tuple[Any, int]:
    call = _GEMMA_CALL.match(text, pos)
    if call is None:
        raise ValueError("no Gemma call here")
    arguments, end = _gemma_object(text, call.end())
    return {"name": call.group(1), "arguments": arguments}, end


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _gemma_value(text: str, pos: int) -> tuple[Any, int]:
    """One value of Gemma 4's notation: JSON but for <|"|>-quoted strings and bare keys."""
    pos = _skip_spaces(text, pos)
    if text.startswith(_GEMMA_QUOTE, pos):
        start = pos + len(_GEMMA_QUOTE)
        end = text.index(_GEMMA_QUOTE, start)  # ValueError when the string never ends
        return text[start:end], end + len(_GEMMA_QUOTE)
    if text.startswith("{", pos):
        return _gemma_object(text, pos + 1)
    if text.startswith("[", pos):
        return _gemma_sequence(text, pos + 1, "]", _gemma_value)
    return _DECODER.raw_decode(text, pos)  # numbers, true, false, null


def _gemma_object(text: str, pos: int) -> tuple[dict[str, Any], int]:
    pairs, end = _gemma_sequence(text, pos, "}", _gemma_pair)
    return dict(pairs), end


def _gemma_pair(text: str, pos: int) -> tuple[tuple[str, Any], int]:
    key = _GEMMA_KEY.match(text, pos)
    if key is None:
        raise ValueError("no key here")
    value, end = _gemma_value(text, key.end())
    return (key.group(1).replace(_GEMMA_QUOTE, "").strip().strip('"'), value), end


def _gemma_sequence(text: str, pos: int, close: str, read: _ItemReader) -> tuple[list[Any], int]:
    """The items of a list or an object, from after its opening bracket to ``close``."""
    items: list[Any] = []
    pos = _skip_spaces(text, pos)
    if text.startswith(close, pos):
        return items, pos + 1
    while True:
        item, pos = read(text, pos)
        items.append(item)
        pos = _skip_spaces(text, pos)
        if text.startswith(close, pos):
            return items, pos + 1
        if not text.startswith(",", pos):
            raise ValueError(f"neither ',' nor {close!r} at {pos}")
        pos += 1


_ITEM_READERS: dict[ToolSyntax, _ItemReader] = {DEEPSEEK: _deepseek_item, GEMMA: _gemma_item}


def _read_item(text: str, pos: int, syntax: ToolSyntax) -> tuple[Any, int] | None:
    """The call (or list of calls) at ``pos`` and where it ends; None when there is none."""
    try:
        return _ITEM_READERS.get(syntax, _json_item)(text, pos)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python goes
        return None


def parse_tool_calls(
    text: str, syntax: ToolSyntax, names: set[str]
) -> tuple[list[ToolCall], str] | None:
    """The calls at the start of ``text`` (which begins at a call's opener) and the text that
    follows them; None unless at least one well-formed call to a known tool is there."""
    calls: list[ToolCall] = []
    pos = _skip_noise(text, 0, syntax)
    while pos < len(text):
        read = _read_item(text, pos, syntax)
        if read is None:
            break
        value, end = read
        items = value if isinstance(value, list) else [value]
        found = [_call_from(item, names) for item in items]
        if not found or any(call is None for call in found):
            return None
        calls.extend(call for call in found if call is not None)
        pos = _skip_noise(text, end, syntax)
    if not calls:
        return None
    return calls, text[pos:]


class ToolCallReader:
    """Splits one generation into content, passed on as it comes, and tool calls, read at the
    end. Feed it every piece; ``finish`` returns the content held back and the calls."""

    def __init__(self, syntax: ToolSyntax, names: set[str], parallel: bool = True) -> None:
        self._syntax = syntax
        self._names = names
        self._parallel = parallel
        self._pending = ""  # content not yet known to be prose
        self._captured: list[str] | None = None  # text from a call's opener on
        self._prose = False  # bare JSON syntax: the answer began as prose, so it holds no call

    def feed(self, text: str) -> str:
        """The part of ``text`` (with what was held back before) that is surely content."""
        if self._captured is not None:
            self._captured.append(text)
            return ""
        if self._prose:
            return text
        self._pending += text
        if self._syntax.opener:
            return self._feed_marked(self._syntax.opener)
        return self._feed_bare()

    def _feed_marked(self, opener: str) -> str:
        at = self._pending.find(opener)
        if at >= 0:
            content, self._captured = self._pending[:at], [self._pending[at:]]
            self._pending = ""
            return content
        keep = held_back_length(self._pending, (opener,))
        content = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return content

    def _feed_bare(self) -> str:
        start = self._pending.lstrip()
        if not start:
            return ""
        openers = (PYTHON_TAG, *_FENCES)
        if start[0] in "{[" or start.startswith(openers):
            self._captured, self._pending = [self._pending], ""
            return ""
        if any(opener.startswith(start) for opener in openers):
            return ""  # may still become a marker
        self._prose = True
        content, self._pending = self._pending, ""
        return content

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The content not yet returned, and the calls (none when the text held no call)."""
        if self._captured is None:
            return self._pending, []
        text = "".join(self._captured)
        parsed = parse_tool_calls(text, self._syntax, self._names)
        if parsed is None:
            return text, []
        calls, trailing = parsed
        return trailing, calls if self._parallel else calls[:1]


def reader_for(
    syntax: ToolSyntax, tools: list[dict[str, Any]], forced: bool, parallel: bool
) -> ToolCallReader:
    """The reader for one request; a forced call is bare JSON whatever the model's syntax."""
    names = {tool["function"]["name"] for tool in tools}
    return ToolCallReader(BARE_JSON if forced else syntax, names, parallel)
