"""Server-sent events, framed once for every stream we send (OpenAI's and Ollama's ``data:``
lines, Anthropic's named events)."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def sse_data(payload: Any) -> bytes:
    """One unnamed event carrying ``payload`` as compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n\n"


def sse_event(event: str, payload: Any) -> bytes:
    """One named event (``event: NAME``), as Anthropic's streams send them."""
    return f"event: {event}\n".encode() + sse_data(payload)
