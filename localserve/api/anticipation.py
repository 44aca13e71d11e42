"""The anticipation line: a guess at a first runner's handshake, on its stdin before it.

`localserve serve` starts its first runner before the daemon imports anything
(``daemon/head_start.py``); the daemon's handshake comes 0.4-0.6 s later, after its imports,
the settings and the model's checks, and the runner would idle until then. So the console
script first writes the handshake the daemon sent the last launch's first runner, without its
token, when that model's files are unchanged since (``FirstRunnerMemory``). The runner loads
that model while it waits (``runner/anticipation.py``) and keeps it when the handshake asks
for the same; otherwise it frees it (without making its context, when the handshake came
before the weights were in) and loads what the handshake asks for.

The line is ``{"anticipate": <handshake fields but the token>, "build": <build id>}``: a
guess for another llama.cpp build (``llama_backends.build_id``) is ignored. A runner started
with the ``GUESS_FIRST`` argument reads it first thing; any other runner never gets one.

Standard modules only: the console script writes it before importing anything else.
"""

from __future__ import annotations

import json
from typing import Any

ANTICIPATE = "anticipate"
BUILD = "build"
GUESS_FIRST = "--guess-first"  # the runner's argument: an anticipation line comes first


def anticipation_line(handshake: dict[str, Any], build: str) -> bytes:
    return (json.dumps({ANTICIPATE: handshake, BUILD: build}) + "\n").encode("utf-8")


def parse_anticipation(line: bytes) -> tuple[dict[str, Any], str] | None:
    """The guessed handshake and its build id, or None when ``line`` is not an anticipation
    line (the handshake itself)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get(ANTICIPATE), dict):
        return None
    return message[ANTICIPATE], str(message.get(BUILD, ""))
