"""Idle unload: memory given back when a model has had no request for its ``keep_alive``.

``keep_alive`` is the daemon's setting, or the one the model's last request asked for;
negative means never. Only a model whose runner is ready can expire: one still starting or
restarting has not had its chance to serve yet. The pool checks twice a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from localserve.daemon.admission import ModelUse

log = logging.getLogger(__name__)

IDLE_CHECK_S = 0.5


def idle_expired(use: ModelUse, now: float) -> bool:
    return use.keep_alive >= 0 and use.idle and now - use.last_used >= use.keep_alive


def expired(ready: Mapping[str, ModelUse], now: float) -> list[str]:
    """The models, of those whose runner is ready, idle for at least their keep_alive."""
    return [name for name, use in ready.items() if idle_expired(use, now)]


async def keep_unloading(unload_idle: Callable[[], Awaitable[object]]) -> None:
    """Call ``unload_idle`` every ``IDLE_CHECK_S`` until cancelled; a failure is logged and
    the checks go on (a runner that would not stop must not keep the others loaded)."""
    while True:
        await asyncio.sleep(IDLE_CHECK_S)
        try:
            await unload_idle()
        except Exception:
            log.exception("Unloading an idle model failed")
