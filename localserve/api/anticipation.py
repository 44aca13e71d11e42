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

A home that has loaded no first model yet (a first launch) has no handshake to recall. Its
launch serves the starter model, loaded as a first start loads it, unless something says
otherwise (``first_launch_guess``): then the line is ``{"anticipate": "starter"}``, and the
runner loads the starter's weights while it waits; the context waits for the handshake's
settings (``runner/anticipation.py``, ``WeightsAhead``).

Standard modules only: the console script writes it before importing anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ANTICIPATE = "anticipate"
BUILD = "build"
GUESS_FIRST = "--guess-first"  # the runner's argument: an anticipation line comes first
STARTER = "starter"  # a first launch's guess: the starter model's weights
# What would make a first launch serve another model, or load it another way (or not ahead):
# `serve`'s options and the settings' variables (``config/settings.py``; the caller looks for
# a config file, which may say anything).
OTHER_LOAD_OPTIONS = ("--model", "-m", "--gpu-layers")
OTHER_LOAD_SETTINGS = ("MODEL", "GPU_LAYERS", "WEIGHT_REPACK", "CPU_VARIANT", "LOAD_AHEAD")
SETTINGS_PREFIX = "LOCALSERVE_"


def anticipation_line(handshake: dict[str, Any] | str, build: str = "") -> bytes:
    return (json.dumps({ANTICIPATE: handshake, BUILD: build}) + "\n").encode("utf-8")


def parse_anticipation(line: bytes) -> tuple[dict[str, Any] | str, str] | None:
    """The guessed handshake (or ``STARTER``) and its build id, or None when ``line`` is not
    an anticipation line (the handshake itself)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    guess = message.get(ANTICIPATE)
    if not isinstance(guess, dict) and guess != STARTER:
        return None
    return guess, str(message.get(BUILD, ""))


def first_launch_guess(args: list[str], environment: Mapping[str, str]) -> bytes | None:
    """The starter's anticipation line for a `serve` with ``args`` in a home without a config
    file, a first runner's handshake to recall, or an engine check's verdict (the caller
    knows): None when an option or a variable in ``environment`` names another model, GPU
    layers, or another way to load it."""
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in OTHER_LOAD_OPTIONS or (arg.startswith("-m") and not arg.startswith("--")):
            return None
    settings = {
        name.upper()[len(SETTINGS_PREFIX) :]
        for name in environment
        if name.upper().startswith(SETTINGS_PREFIX)
    }
    if settings.intersection(OTHER_LOAD_SETTINGS):
        return None
    return anticipation_line(STARTER)
