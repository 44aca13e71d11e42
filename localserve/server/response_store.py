"""Responses kept for ``previous_response_id`` and ``GET``/``DELETE /v1/responses/{id}``.

Kept in memory, per key (one app's key cannot read another's), bounded in count and age: the
oldest go first. A response keeps the conversation that led to it as chat messages, so a
follow-up sends only its new input. Nothing is written to disk; a daemon restart forgets them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_RESPONSES = 500
MAX_AGE_S = 6 * 3600.0


@dataclass(frozen=True)
class StoredResponse:
    owner: str
    response: dict[str, Any]  # the response object, as it was sent
    conversation: list[dict[str, Any]]  # chat messages up to and including its output
    stored_at: float


class ResponseStore:
    def __init__(self, max_count: int = MAX_RESPONSES, max_age_s: float = MAX_AGE_S) -> None:
        self._max_count = max_count
        self._max_age_s = max_age_s
        self._kept: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, owner: str, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        with self._lock:
            self._kept[response["id"]] = StoredResponse(owner, response, conversation, time.time())
            self._forget_old()

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """The response, if ``owner`` stored it and it is not too old."""
        with self._lock:
            self._forget_old()
            kept = self._kept.get(response_id)
            return kept if kept is not None and kept.owner == owner else None

    def delete(self, owner: str, response_id: str) -> bool:
        with self._lock:
            kept = self._kept.get(response_id)
            if kept is None or kept.owner != owner:
                return False
            del self._kept[response_id]
            return True

    def _forget_old(self) -> None:
        oldest_kept = time.time() - self._max_age_s
        while self._kept:
            first = next(iter(self._kept.values()))
            if len(self._kept) <= self._max_count and first.stored_at >= oldest_kept:
                return
            self._kept.popitem(last=False)
