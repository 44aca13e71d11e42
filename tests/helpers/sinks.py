"""A scheduler sink for tests that drive an ``Engine`` in-process, without HTTP."""

from __future__ import annotations

import threading

from localserve.runner.text import GenerationStats


class RecordingSink:
    """Keeps the text, the stats and the error, and says when the generation is done."""

    def __init__(self, prompt_tokens: int) -> None:
        self.cancelled = threading.Event()
        self.stats = GenerationStats(prompt_tokens)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.pieces: list[str] = []

    def emit(self, text: str) -> None:
        self.pieces.append(text)

    def close(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()
