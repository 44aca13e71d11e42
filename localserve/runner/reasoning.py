"""Thoughts kept apart from the answer: reading them out of what a thinking model writes, and
the plan the engine follows to keep a thought within its budget.

A model marks its thoughts in its family's syntax (``hub/templates.py``): ``<think>…</think>``,
``[THINK]…[/THINK]``, or gpt-oss's harmony channels (``runner/harmony.py``). A template may open
the thought itself at the end of the prompt (DeepSeek-R1 distills) or close it there (Qwen3 with
thinking off), so each reader starts where the prompt left the model. Readers are fed text as it
is generated and hold back only what may be the start of a marker; nothing the model wrote is
lost. (No llama.cpp here: these are pure text state machines, tested piece by piece.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

from localserve.hub.templates import ThinkingSyntax
from localserve.runner.text import held_back_length
from localserve.runner.tools import ToolCall, ToolCallReader


@dataclass
class Split:
    """A piece of one generation: the part that is thought and the part that is answer."""

    reasoning: str = ""
    content: str = ""

    def __add__(self, other: Split) -> Split:
        return Split(self.reasoning + other.reasoning, self.content + other.content)


class OutputReader(Protocol):
    """Splits one chat generation into thoughts, answer and tool calls."""

    def feed(self, text: str) -> Split: ...

    def finish(self) -> tuple[Split, list[ToolCall]]: ...


class Place(Enum):
    """Where a generation stands against its thought."""

    BEFORE = "before"  # the model may open a thought first
    INSIDE = "inside"  # the prompt opened it: everything is thought until the closer
    AFTER = "after"  # answer only (the thought is closed, or the answer began without one)


def place_after_prompt(syntax: ThinkingSyntax, prompt: str) -> Place:
    """Where the rendered ``prompt`` leaves the model: R1 distills end it inside an open
    ``<think>``; Qwen3 with thinking off ends it after an empty, closed one."""
    tail = prompt.rstrip()
    if tail.endswith(syntax.opener):
        return Place.INSIDE
    if tail.endswith(syntax.closer):
        return Place.AFTER
    return Place.BEFORE


class ThoughtReader:
    """Thought and answer, for the families that mark a thought with an opener and a closer
    at the start of the answer. Whitespace around the thought is the markers' and is trimmed."""

    def __init__(self, syntax: ThinkingSyntax, place: Place) -> None:
        self._syntax = syntax
        self._place = place
        self._pending = ""  # text not yet known to be thought or answer
        self._thought_started = False  # leading whitespace of the thought is dropped
        self._answer_started = False  # leading whitespace of the answer after a thought too
        self._thought_seen = place is not Place.AFTER

    def feed(self, text: str) -> Split:
        self._pending += text
        split = Split()
        while True:
            before = (self._place, len(self._pending))
            if self._place is Place.BEFORE:
                self._read_start()
            elif self._place is Place.INSIDE:
                split.reasoning += self._read_thought()
            else:
                split.content += self._answer(self._pending)
                self._pending = ""
            if (self._place, len(self._pending)) == before:
                return split

    def _read_start(self) -> None:
        start = self._pending.lstrip()
        opener = self._syntax.opener
        if start.startswith(opener):
            self._place, self._pending = Place.INSIDE, start[len(opener) :]
        elif start and not opener.startswith(start):
            self._place, self._thought_seen = Place.AFTER, False

    def _read_thought(self) -> str:
        closer = self._syntax.closer
        at = self._pending.find(closer)
        if at >= 0:
            thought, self._pending = self._pending[:at], self._pending[at + len(closer) :]
            self._place = Place.AFTER
            return self._thought(thought.rstrip())
        keep = held_back_length(self._pending, (closer,))
        ready = self._pending[: len(self._pending) - keep]
        trailing = len(ready) - len(ready.rstrip())  # kept until more thought follows it
        ready = ready[: len(ready) - trailing]
        self._pending = self._pending[len(ready) :]
        return self._thought(ready)

    def _thought(self, text: str) -> str:
        if not self._thought_started:
            text = text.lstrip()
            self._thought_started = bool(text)
        return text

    def _answer(self, text: str) -> str:
        if self._thought_seen and not self._answer_started:
            text = text.lstrip()
            self._answer_started = bool(text)
        return text

    def finish(self) -> Split:
        """What was held back: an unclosed thought stays thought (a budget or max_tokens cut
        it); a start that never became a thought is answer."""
        rest, self._pending = self._pending, ""
        if self._place is Place.INSIDE:
            return Split(reasoning=self._thought(rest.rstrip()))
        return Split(content=self._answer(rest))


class ChatOutput:
    """The output reader of the tag families: the thought first (when the model thinks), then
    the answer, whose tool calls ``tools`` reads."""

    def __init__(self, thought: ThoughtReader | None, tools: ToolCallReader | None) -> None:
        self._thought = thought
        self._tools = tools

    def feed(self, text: str) -> Split:
        split = self._thought.feed(text) if self._thought else Split(content=text)
        if self._tools is not None and split.content:
            split.content = self._tools.feed(split.content)
        return split

    def finish(self) -> tuple[Split, list[ToolCall]]:
        split = self._thought.finish() if self._thought else Split()
        if self._tools is None:
            return split, []
        content = self._tools.feed(split.content) if split.content else ""
        rest, calls = self._tools.finish()
        return Split(split.reasoning, content + rest), calls


# -- the budget, in the engine ----------------------------------------------------------------
@dataclass(frozen=True)
class ThoughtPlan:
    """What the scheduler knows of one request's thought: how to see it open and close, how
    many tokens it may take, and the tokens that close it when they run out."""

    opener: str
    closer: str
    place: Place
    budget: int | None = None  # None: as long as the model likes
    close_tokens: tuple[int, ...] = ()


@dataclass
class ThoughtWatch:
    """Follows one generation's text against its thought, on the scheduler thread: counts the
    thought's tokens (``usage.completion_tokens_details.reasoning_tokens``) and, when the
    budget is spent, gives the tokens to write in place of the model's next ones."""

    plan: ThoughtPlan
    tokens: int = 0
    _state: Literal["before", "inside", "done"] = "before"
    _tail: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.plan.place is Place.INSIDE:
            self._state = "inside"
        elif self.plan.place is Place.AFTER:
            self._state = "done"

    def after_token(self, text: str) -> tuple[int, ...]:
        """``text`` is what the latest token added; returns the tokens to force next."""
        if self._state == "done":
            return ()
        if self._state == "inside":
            self.tokens += 1
        self._tail += text
        marker = self.plan.opener if self._state == "before" else self.plan.closer
        at = self._tail.find(marker)
        if at >= 0:
            self._state = "inside" if self._state == "before" else "done"
            self._tail = self._tail[at + len(marker) :]
            if self._state == "inside" and self.plan.closer in self._tail:
                self._state = "done"
        elif self._state == "before" and not _may_open(self._tail.lstrip(), self.plan.opener):
            self._state = "done"  # the answer began without a thought
        self._tail = self._tail[-64:]
        budget = self.plan.budget
        if self._state == "inside" and budget is not None and self.tokens >= budget:
            self._state = "done"
            return self.plan.close_tokens
        return ()


def _may_open(start: str, opener: str) -> bool:
    return not start or start.startswith(opener) or opener.startswith(start)
