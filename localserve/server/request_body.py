"""Reading a request's JSON body, the same way for every protocol: within ``body_timeout``
(408 after) and as a JSON object (400 otherwise). The errors are ``APIError``s, rendered in the
caller's protocol; ``api.requests.validate`` checks the object against a model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request

from localserve.api.errors import APIError

DEFAULT_BODY_TIMEOUT_S = 30.0


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
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"Malformed JSON in request body: {exc}", code="invalid_json") from exc
    if not isinstance(payload, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    return payload
