"""What a runner says on stdout until it serves, and how it exits (``api/runner.py``).

Standard modules only: a runner on a trial engine path says ``checking`` as soon as its
handshake comes, before it loads the model, and pydantic is still being imported then.
"""

from __future__ import annotations

import json
from typing import Any

EVENT_READY = "ready"
EVENT_LOAD_FAILED = "load_failed"
EVENT_CHECKING = "checking"  # a trial path's runner, before it loads: the CPU variant
EXIT_LOAD_FAILED = 3
# The runner cannot serve its handshake in this process (it loaded another CPU variant ahead
# of it, ``llama_backends.OtherVariantLoaded``): it exits before saying anything, and the
# supervisor starts a new one.
EXIT_RESPAWN = 4


def event_line(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **fields})
