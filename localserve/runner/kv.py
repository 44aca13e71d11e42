"""The KV cache's cells: which slot holds which, and who gives them back when it fills.

By default the slots share one KV cache (llama.cpp's unified cache), so memory follows use: a
sequence takes a cell per token as its prompt and answer grow, and gives them back when its
slot is reused. A request that starts keeps the prefix of the slot it takes and clears the
other idle slots' (the scheduler's ``_clear_idle_slots``: attention spans the cache up to its
highest used cell). When the cache fills, idle prefixes are dropped first, least recently used
first; only then is a running sequence preempted (the scheduler frees its cells and prefills
what it had so far again later, as vLLM's recompute preemption).
New requests are admitted only while the cells the running sequences hold or will hold, plus the
new prompt, fit, so preemption is rare.

With ``batch_exact`` each slot has its own KV stream of a full context, which it can never
overflow (the engine checks every request against the context): nothing here applies.

The count is ours, not llama.cpp's: a slot's cells are the tokens it holds. A prefix copied
from another slot shares cells in a unified cache, so the count errs on the full side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import llama_cpp

GROWTH_RESERVE = 16  # cells kept per running sequence, so prompts do not starve answers


@dataclass
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV cells this slot holds
    last_used: float = 0.0
    busy: bool = False

    def forget(self, memory: llama_cpp.llama_memory_t) -> int:
        """Drop the slot's cells; returns how many it held."""
        held = len(self.cached)
        llama_cpp.llama_memory_seq_rm(memory, self.seq_id, -1, -1)
        self.cached = []
        return held


class SharedCells:
    """The cells of one shared KV cache of ``cells`` cells, over ``slots``."""

    def __init__(self, memory: llama_cpp.llama_memory_t, cells: int, slots: list[Slot]) -> None:
        self._memory = memory
        self.cells = cells
        self._slots = slots

    @property
    def used(self) -> int:
        return sum(len(slot.cached) for slot in self._slots)

    @property
    def free(self) -> int:
        return max(0, self.cells - self.used)

    def admits(self, prompt_tokens: int, committed: Iterable[int]) -> bool:
        """Whether a new prompt fits beside what the running sequences hold or will hold
        (``committed``: one count per running sequence)."""
        held = list(committed)
        if not held:
            return True  # alone, any request fits: the cache is at least one context
        reserve = GROWTH_RESERVE * (len(held) + 1)
        return sum(held) + prompt_tokens + reserve <= self.cells

    def make_room(self, needed: int) -> bool:
        """Free cells until ``needed`` are free, dropping idle prefixes least recently used
        first; False when that is not enough."""
        free = self.free
        if free >= needed:  # the common case, every step: no sorting
            return True
        idle = sorted((s for s in self._slots if not s.busy and s.cached), key=_last_used)
        for slot in idle:
            if free >= needed:
                break
            free += slot.forget(self._memory)
        return free >= needed


def _last_used(slot: Slot) -> float:
    return slot.last_used
