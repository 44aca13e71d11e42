"""What was sent to each cloud provider: requests and tokens per provider and model, and an
estimated cost where a price is configured. Kept in ``cloud-usage.json`` in the data dir,
rewritten atomically after each forwarded request (the daemon writes, ``cloud usage`` reads)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localserve.cloud.providers import Price
from localserve.hub.library import write_json_atomic


@dataclass
class UsageLine:
    provider: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    priced: bool = False  # a price was known for every request counted
    last_used: float = 0.0


class UsageLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def lines(self) -> list[UsageLine]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []  # a damaged ledger loses history, never a request
        return [UsageLine(**line) for line in data.get("lines", [])]

    def record(
        self,
        provider: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        price: Price | None,
    ) -> None:
        with self._lock:
            lines = {(line.provider, line.model): line for line in self.lines()}
            line = lines.setdefault((provider, model), UsageLine(provider, model, priced=True))
            line.requests += 1
            line.prompt_tokens += prompt_tokens
            line.completion_tokens += completion_tokens
            if price is None:
                line.priced = False
            else:
                line.cost += (
                    prompt_tokens * price.prompt_per_million
                    + completion_tokens * price.completion_per_million
                ) / 1e6
            line.last_used = time.time()
            data: dict[str, Any] = {"lines": [asdict(item) for item in lines.values()]}
            write_json_atomic(self.path, data)
