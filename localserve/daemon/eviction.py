"""Eviction: which loaded models give way when ``max_loaded_models`` are loaded and one more
is wanted.

The least recently used model with no request in flight goes first. A busy model is never
unloaded under its requests: when the idle ones are not enough, the new request gets a fast
503 (``BackendUnavailableError``) instead of a wait for some request to finish, and nothing
is unloaded for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from localserve.daemon.admission import ModelUse
from localserve.errors import BackendUnavailableError


def choose_eviction(loaded: Mapping[str, ModelUse]) -> str | None:
    """The least recently used idle model (ties by name), or None when every one is busy."""
    idle = [(use.last_used, name) for name, use in loaded.items() if use.idle]
    return min(idle)[1] if idle else None


def make_room(loaded: Mapping[str, ModelUse], max_loaded: int) -> list[str]:
    """The models to unload, in order, so that one more fits within ``max_loaded``."""
    left = dict(loaded)
    victims: list[str] = []
    while len(left) >= max_loaded:
        victim = choose_eviction(left)
        if victim is None:
            raise BackendUnavailableError(
                f"All {len(left)} loaded models are busy and max_loaded_models is "
                f"{max_loaded}; try again shortly or raise max_loaded_models."
            )
        victims.append(victim)
        del left[victim]
    return victims
