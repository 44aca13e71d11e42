"""Identifiers made for the wire."""

from __future__ import annotations

import secrets


def new_call_id() -> str:
    """A tool call's id, in OpenAI's form (``call_`` and 24 hex digits)."""
    return "call_" + secrets.token_hex(12)
