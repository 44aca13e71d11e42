"""From sampled tokens to the text a client sees: UTF-8 across token boundaries, stop strings,
and the token budget. One ``TextAssembler`` per generating sequence."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class GenerationStats:
    """Filled in while a generation runs; final once it has finished."""

    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV cells were reused, not recomputed
    accepted_draft_tokens: int = 0  # prompt-lookup guesses the model confirmed
    rejected_draft_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens, those of a thinking model's thought
    images: int = 0  # images decoded into the prompt (their tokens are in prompt_tokens)
    images_cached: int = 0  # of those, the ones whose embeddings came from the cache
    finish_reason: str = "stop"
    started_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def ttft_seconds(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    @property
    def generation_tokens_per_second(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None or self.completion_tokens < 2:
            return None
        elapsed = self.finished_at - self.first_token_at
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None


def held_back_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextAssembler:
    """Feeds on tokens, gives back text that is safe to send, and says when to stop.

    Text that might be the start of a stop string is held back until it is known not to be;
    text cut by a stop string is never sent.
    """

    def __init__(
        self,
        detokenize: Callable[[int], bytes],
        is_end_of_generation: Callable[[int], bool],
        stops: tuple[str, ...],
        max_tokens: int,
        stats: GenerationStats,
    ) -> None:
        self._detokenize = detokenize
        self._is_eog = is_end_of_generation
        self._stops = stops
        self._max_tokens = max_tokens
        self.stats = stats
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.finished = False

    @property
    def tokens_left(self) -> int:
        return self._max_tokens - self.stats.completion_tokens

    def feed(self, token: int) -> str:
        """Text to send after ``token``; sets ``finished`` when the generation is over."""
        stats = self.stats
        if stats.first_token_at is None:
            stats.first_token_at = time.perf_counter()
        if self._is_eog(token):
            return self._finish("stop")
        stats.completion_tokens += 1
        self._pending += self._decoder.decode(self._detokenize(token))
        stop_at = min(
            (i for i in (self._pending.find(s) for s in self._stops) if i >= 0), default=-1
        )
        if stop_at >= 0:
            self._pending = self._pending[:stop_at]
            return self._finish("stop")
        if stats.completion_tokens >= self._max_tokens:
            return self._finish("length")
        keep = held_back_length(self._pending, self._stops) if self._stops else 0
        ready = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return ready

    def cancel(self) -> None:
        self._pending = ""
        self._finish("cancelled")

    def _finish(self, reason: str) -> str:
        self.finished = True
        self.stats.finish_reason = reason
        self.stats.finished_at = time.perf_counter()
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return rest if reason != "cancelled" else ""
