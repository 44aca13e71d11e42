"""Speculative decoding by prompt lookup: guess the next tokens by finding the last few tokens
earlier in the text (code completion and edits repeat their context a lot), and let the model
check the guesses in one batch.

``PromptLookup`` indexes a sequence's tokens by n-gram, so a draft costs a dict look-up per step
rather than a scan of the history. ``DraftControl`` sizes the drafts from how many were accepted:
a rejected draft still costs compute, so drafting backs off while guesses keep missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NGRAM_SIZES = (3, 2)  # longest first: a longer match is a better guess
MAX_DRAFT = 8
MAX_COOLDOWN = 32  # steps without drafting after repeated misses, at most
GOOD_ACCEPTANCE = 0.75  # the share of recent drafted tokens confirmed, to go on drafting
DECAY = 0.8  # weight of older drafts in that share, per drafting step


class PromptLookup:
    """The tokens of one sequence (prompt and accepted output) and an index of their n-grams."""

    def __init__(self, tokens: list[int]) -> None:
        self._tokens: list[int] = []
        # n-gram -> index of the token that followed its most recent occurrence
        self._next: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            end = len(self._tokens)
            for size in NGRAM_SIZES:
                if end >= size:
                    self._next[tuple(self._tokens[end - size : end])] = end
            self._tokens.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the latest earlier occurrence of the text's tail."""
        if limit <= 0:
            return []
        for size in NGRAM_SIZES:
            if len(self._tokens) < size:
                continue
            start = self._next.get(tuple(self._tokens[-size:]))
            if start is not None:
                return self._tokens[start : start + limit]
        return []


@dataclass
class DraftControl:
    """How many tokens to draft next, from how the recent drafts fared.

    Drafting pays only when nearly every guess is confirmed: here a drafted row costs 0.55-0.65
    of a one-token step (the starter model is compute-bound on 2 cores), so a step that drafts
    k tokens and keeps a of them gains only if (1 + a) > (1 + 0.6 k). While the recent share of
    confirmed guesses is below ``GOOD_ACCEPTANCE``, drafting pauses, twice as long each time.
    """

    length: int = 4
    cooldown: int = 0  # steps left before drafting again
    _confirmed: float = field(default=0.0, repr=False)  # decayed counts of recent drafts
    _drafted: float = field(default=0.0, repr=False)
    _penalty: int = field(default=0, repr=False)  # the pause after the next poor step

    def next_length(self) -> int:
        if self.cooldown > 0:
            self.cooldown -= 1
            return 0
        return self.length

    def record(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return
        self._confirmed = self._confirmed * DECAY + accepted
        self._drafted = self._drafted * DECAY + drafted
        if accepted == drafted:
            self.length = min(MAX_DRAFT, self.length * 2)
        else:
            self.length = max(1, accepted)
        if self._confirmed < GOOD_ACCEPTANCE * self._drafted:
            self._penalty = min(MAX_COOLDOWN, max(1, self._penalty * 2))
            self.cooldown = self._penalty
        else:
            self._penalty = 0
