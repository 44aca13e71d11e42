"""A request's ``keep_alive`` (how long its model stays loaded), in the forms clients send."""

from __future__ import annotations

import re
from typing import Any

from localserve.errors import InvalidRequestError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any) -> float | None:
    """Seconds from a request's ``keep_alive``: a number of seconds or a duration such as
    "10m", "1h30m", "-1" (Ollama's forms). Negative means keep loaded; None when absent."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("-")
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(number + unit for number, unit in parts) != body:
        raise InvalidRequestError(
            f"keep_alive {value!r} is not a duration: use seconds or forms like '10m', '1h', "
            "'0' (unload after this request) or '-1' (keep loaded).",
            param="keep_alive",
        )
    return sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
