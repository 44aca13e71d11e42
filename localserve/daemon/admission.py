"""Admission: the requests a loaded model holds, and when it turns the next one away.

A model answers ``slots`` requests at once (its runner's parallel sequences) and lets up to
``max_queue`` more wait in its runner's queue; the one after that gets a 429 at once
(``QueueFullError``) rather than waiting behind a queue that will not drain in time. A request
counts as in flight from admission until its response is closed (a stream until its last
chunk), so the same count says whether the model is idle, for eviction and idle unload.
"""

from __future__ import annotations

from dataclasses import dataclass

from localserve.errors import QueueFullError


@dataclass
class ModelUse:
    """One loaded model's requests: how many are in flight, when it was last used, and how
    long it may then sit idle before it is unloaded (seconds; negative: never)."""

    keep_alive: float
    in_flight: int = 0
    last_used: float = 0.0

    @property
    def idle(self) -> bool:
        return self.in_flight == 0

    def admit(
        self, model_id: str, slots: int, max_queue: int, now: float, keep_alive: float | None
    ) -> None:
        """Count one more request, or refuse it when the slots and the queue are full. A
        request's ``keep_alive`` replaces the model's idle time from now on."""
        if self.in_flight >= slots + max_queue:
            raise QueueFullError(
                f"{model_id} is busy: {slots} requests are being answered and "
                f"{self.in_flight - slots} are waiting (max_queue is {max_queue}). "
                "Retry shortly."
            )
        self.in_flight += 1
        self.last_used = now
        if keep_alive is not None:
            self.keep_alive = keep_alive

    def leave(self, now: float) -> bool:
        """Count one request finished; True when the model is idle now."""
        self.in_flight = max(0, self.in_flight - 1)
        self.last_used = now
        return self.idle
