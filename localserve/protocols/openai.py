"""OpenAI's wire format, as the other protocols' translators read it: tool calls put together
from stream deltas, a call's JSON arguments as an object, a thinking model's thoughts, image
content parts, and OpenAI's error body. Pure: no HTTP, no FastAPI. (OpenAI's requests are
checked by ``api/requests.py``; backends answer in OpenAI's shape, so its replies are relayed
as they are.)"""

from __future__ import annotations

import json
from typing import Any

from localserve.api.errors import APIError, error_body


def openai_body(model: str, stream: bool, **fields: Any) -> dict[str, Any]:
    """The OpenAI request another protocol's request becomes: ``fields`` that are set (None
    ones left out) and, when it streams, usage in the last chunk, since Anthropic, Ollama and
    the Responses API all report token counts at the end of a stream."""
    body = {"model": model, "stream": stream}
    body.update({name: value for name, value in fields.items() if value is not None})
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def image_part(url: str, detail: str | None = None) -> dict[str, Any]:
    """OpenAI's image content part, the one shape every protocol's images become."""
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "image_url"


def text_part_like(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text"


def message_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A message's content from its parts: text alone stays one string (the shape every
    backend takes), parts with images stay parts, in order."""
    if any(is_image(part) for part in parts):
        return parts
    return "".join(part["text"] for part in parts)


def content_parts(content: Any) -> list[Any]:
    """A message's content as a list of parts ("" and None as none)."""
    if isinstance(content, list):
        return content
    return [text_part(content)] if content else []


def joined_text(parts: list[Any]) -> str | list[Any]:
    """A tool message's parts, its images taken out, as one string when the rest is text (a
    list with anything else stays as it is, for validation to refuse)."""
    rest = [part for part in parts if not is_image(part)]
    texts = [part.get("text") if text_part_like(part) else None for part in rest]
    if all(isinstance(text, str) for text in texts):
        return "".join(text for text in texts if isinstance(text, str))
    return rest


def lift_tool_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's rule: images only in user messages. Anthropic's tool results, Ollama's tool
    messages and the Responses API's function call outputs may hold images (a screenshot
    tool's), which llama-server and Ollama show the model with the result. So they are kept,
    not dropped: each run of tool messages keeps its text, and its images go, in order, to the
    start of the user message that follows the run, or to a new user message when none does
    (templates that want turns to alternate get no second user turn in a row). Content that is
    not what a translator made (a client's odd value) is left for validation to refuse."""
    result: list[dict[str, Any]] = []
    lifted: list[dict[str, Any]] = []
    for message in messages:
        if lifted and message.get("role") != "tool":
            if message.get("role") == "user":
                message = {**message, "content": lifted + content_parts(message.get("content"))}
            else:
                result.append({"role": "user", "content": lifted})
            lifted = []
        content = message.get("content")
        if message.get("role") == "tool" and isinstance(content, list):
            lifted += [part for part in content if is_image(part)]
            message = {**message, "content": joined_text(content)}
        result.append(message)
    if lifted:
        result.append({"role": "user", "content": lifted})
    return result


def error_object(err: APIError) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return error_body(err.message, err.error_type, err.code, err.param)


class StreamedToolCalls:
    """Tool calls put together from stream deltas: OpenAI sends each call's id and name first
    and its arguments in pieces, keyed by ``index``."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, delta: dict[str, Any]) -> None:
        for piece in delta.get("tool_calls") or []:
            call = self._calls.setdefault(
                int(piece.get("index", 0)),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] = piece.get("id") or call["id"]
            function = piece.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""

    def calls(self) -> list[dict[str, Any]]:
        return [self._calls[index] for index in sorted(self._calls)]


def call_arguments(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as an object ({} when they are not one), for the protocols
    that send arguments as objects (Anthropic's ``input``, Ollama's ``arguments``)."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def reasoning_of(message: dict[str, Any]) -> str:
    """The thoughts in an OpenAI answer's message or a stream delta (``reasoning_content``, as
    llama-server and DeepSeek send them): "" when there are none, or when a backend sends
    something else there."""
    thought = message.get("reasoning_content")
    return thought if isinstance(thought, str) else ""
