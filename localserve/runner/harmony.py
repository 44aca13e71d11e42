"""gpt-oss's harmony format, read as it is generated: thoughts, answer and tool calls.

A harmony answer is a run of messages, each a header and a body::

    <|channel|>analysis<|message|>THOUGHT<|end|>
    <|start|>assistant<|channel|>final<|message|>ANSWER<|return|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json
        <|message|>{"city": "Paris"}<|call|>          (one line: a call)

The ``analysis`` channel is thought, ``final`` is the answer, and a ``commentary`` message to
``functions.NAME`` is a tool call (without a recipient it is a preamble, shown as answer). The
engine keeps these special tokens visible for the family (``Engine``), so they arrive as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from localserve.runner.reasoning import Split
from localserve.runner.text import held_back_length
from localserve.runner.tools import ToolCall

MESSAGE = "<|message|>"
BODY_ENDS = ("<|end|>", "<|call|>", "<|return|>", "<|start|>")
HEADER_STARTS = ("<|start|>", "<|channel|>", "to=", "assistant")
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")
_RECIPIENT = re.compile(r"to=([^\s<]+)")


@dataclass(frozen=True)
class Header:
    channel: str
    recipient: str = ""

    @property
    def tool(self) -> str | None:
        """The function a commentary message calls, if it calls one."""
        if self.recipient.startswith("functions."):
            return self.recipient.removeprefix("functions.")
        return None


def read_header(text: str) -> Header:
    channel = _CHANNEL.search(text)
    recipient = _RECIPIENT.search(text)
    return Header(channel.group(1) if channel else "final", recipient.group(1) if recipient else "")


def header_after_prompt(prompt: str) -> Header | None:
    """The header of the message the prompt leaves open (it ends in ``<|message|>`` when the
    engine wrote the start of the answer itself), or None when the model writes the header."""
    if not prompt.endswith(MESSAGE):
        return None
    start = prompt.rfind("<|start|>")
    return read_header(prompt[start if start >= 0 else 0 : -len(MESSAGE)])


class HarmonyReader:
    """Splits a harmony generation; with ``tool_names``, messages to those functions are calls."""

    def __init__(self, tool_names: set[str], open_header: Header | None = None) -> None:
        self._tool_names = tool_names
        self._header: Header | None = open_header  # None: reading a header
        self._pending = ""
        self._call_body = ""
        self._calls: list[ToolCall] = []
        self._answer_started = False

    def feed(self, text: str) -> Split:
        self._pending += text
        split = Split()
        while self._pending:
            consumed = self._read_body(split) if self._header else self._read_header()
            if not consumed:
                break
        return split

    def _read_header(self) -> bool:
        at = self._pending.find(MESSAGE)
        if at >= 0:
            self._header = read_header(self._pending[:at])
            self._pending = self._pending[at + len(MESSAGE) :]
            return True
        start = self._pending.lstrip()
        if start and not any(s.startswith(start[: len(s)]) for s in HEADER_STARTS):
            self._header = Header("final")  # a model that writes no header: plain answer
            return True
        return False

    def _read_body(self, split: Split) -> bool:
        assert self._header is not None
        ends = [(at, end) for end in BODY_ENDS if (at := self._pending.find(end)) >= 0]
        if ends:
            at, end = min(ends)
            self._route(self._pending[:at], split, closing=True)
            skip = 0 if end == "<|start|>" else len(end)  # <|start|> begins the next header
            self._pending = self._pending[at + skip :]
            self._header = None
            return True
        keep = held_back_length(self._pending, BODY_ENDS)
        ready = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(ready) :]
        self._route(ready, split, closing=False)
        return False

    def _route(self, text: str, split: Split, closing: bool) -> None:
        assert self._header is not None
        header = self._header
        if header.tool is not None and header.tool in self._tool_names:
            self._call_body += text
            if closing:
                split.content += self._end_call(header.tool)
        elif header.channel == "analysis":
            split.reasoning += text
        else:
            if not self._answer_started:
                text = text.lstrip()
                self._answer_started = bool(text)
            split.content += text

    def _end_call(self, name: str) -> str:
        """Records the call; a body that is not a JSON object comes back, as answer text."""
        body, self._call_body = self._call_body.strip(), ""
        try:
            arguments = json.loads(body)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            return body
        self._calls.append(ToolCall(name, json.dumps(arguments, ensure_ascii=False)))
        return ""

    def finish(self) -> tuple[Split, list[ToolCall]]:
        split = Split()
        rest, self._pending = self._pending, ""
        if self._header is None:
            if rest.strip() and MESSAGE not in rest:
                split.content += rest  # an unfinished header is kept, not lost
        else:
            self._route(rest, split, closing=True)
        return split, self._calls
