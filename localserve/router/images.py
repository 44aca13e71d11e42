"""Images in requests for local models: only a model with a projector sees them, and http(s)
images are fetched here, within the image policy (``localserve.media``), so a runner is only
ever handed ``data:`` URLs. Cloud providers get a request's images as they came."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from localserve.errors import UnsupportedFeatureError
from localserve.media import ImagePolicy, fetched_as_data_url

VISION = "vision"  # the capability of a model with a projector


def image_parts(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ``image_url`` content parts of a chat payload's messages, in order."""
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    yield part


def part_url(part: dict[str, Any]) -> str:
    image = part.get("image_url")
    return str(image.get("url", "") if isinstance(image, dict) else image or "")


def refuse_blind_model(model: str, seeing: list[str]) -> UnsupportedFeatureError:
    others = (
        f"Installed models that see: {', '.join(seeing)}."
        if seeing
        else "No installed model sees images; pull one that has a projector (mmproj), e.g. "
        "`localserve models pull ggml-org/gemma-3-4b-it-GGUF`."
    )
    return UnsupportedFeatureError(
        f"The model '{model}' does not see images: it has no vision projector. {others}",
        param="messages",
        code="image_not_supported",
    )


async def with_fetched_images(payload: dict[str, Any], policy: ImagePolicy) -> dict[str, Any]:
    """``payload`` with each image URL replaced by the data URL of what it points at (fetched
    side by side; the first refusal wins, as a 400 with its reason)."""
    parts = list(image_parts(payload))
    urls = await asyncio.gather(*(fetched_as_data_url(part_url(part), policy) for part in parts))
    replaced = iter(urls)
    messages = []
    for message in payload["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(part in parts for part in content):
            content = [
                {**part, "image_url": {**_image_object(part), "url": next(replaced)}}
                if part in parts
                else part
                for part in content
            ]
            message = {**message, "content": content}
        messages.append(message)
    return {**payload, "messages": messages}


def _image_object(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    return dict(image) if isinstance(image, dict) else {}
