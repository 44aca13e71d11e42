"""Reading a request's JSON body, the same way for every protocol: within ``body_timeout``
(408 after) and as a JSON object nested at most ``MAX_NESTING`` deep (400 otherwise), its
strings made well-formed Unicode. The errors are ``APIError``s, rendered in the caller's
protocol; ``api.requests.validate`` checks the object against a model."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.requests import Request

from localserve.api.errors import APIError

DEFAULT_BODY_TIMEOUT_S = 30.0
# Arrays and objects in arrays and objects: far more than any real request (a tool's JSON
# schema included), far less than what overflows the stack of whatever recurses over the body
# after us (the JSON encoder that forwards it, the runner's parser).
MAX_NESTING = 100
# A UTF-16 half without its other half (JSON's "\ud800", or its bytes in the body): no
# character, so no UTF-8 answer, log line or tokenizer can carry it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object in the body, read within the app's ``body_timeout`` (slow senders get
    408 rather than holding the connection)."""
    timeout = float(getattr(request.app.state, "body_timeout", DEFAULT_BODY_TIMEOUT_S))
    try:
        raw = await asyncio.wait_for(request.body(), timeout)
    except asyncio.TimeoutError:
        raise APIError(
            408, f"The request body did not arrive within {timeout:.0f} s.", code="body_timeout"
        ) from None
    too_deep = APIError(
        400, f"The request body nests deeper than {MAX_NESTING} levels.", code="invalid_json"
    )
    try:
        payload = json.loads(raw)
    except RecursionError:  # the parser's own stack ran out: thousands of levels
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"Malformed JSON in request body: {exc}", code="invalid_json") from exc
    if not isinstance(payload, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    if not well_formed(payload, MAX_NESTING):
        raise too_deep
    return payload


def well_formed(payload: dict[str, Any], levels: int) -> bool:
    """Replace lone surrogates in ``payload``'s strings and keys with U+FFFD (as Go's JSON
    decoder does, Ollama's included); False when arrays and objects nest more than ``levels``
    deep. Level by level, in place: no recursion to overflow here either."""
    containers: list[dict[str, Any] | list[Any]] = [payload]
    for _ in range(levels):
        deeper: list[dict[str, Any] | list[Any]] = []
        for container in containers:
            if isinstance(container, dict):
                for key in [key for key in container if unpaired(key)]:
                    container[LONE_SURROGATE.sub("\ufffd", key)] = container.pop(key)
            slots = container.items() if isinstance(container, dict) else enumerate(container)
            for slot, value in slots:
                if isinstance(value, str):
                    if unpaired(value):
                        container[slot] = LONE_SURROGATE.sub("\ufffd", value)  # type: ignore[index]
                elif isinstance(value, (dict, list)):
                    deeper.append(value)
        if not deeper:
            return True
        containers = deeper
    return False


def unpaired(text: str) -> bool:
    return not text.isascii() and LONE_SURROGATE.search(text) is not None
