"""Ollama's API, translated: its chat messages, options, tool calls and ``think`` to OpenAI's,
and OpenAI's answers back to Ollama's NDJSON lines. Pure: no HTTP, no FastAPI (the routes are in
``server/routes/ollama.py``), so each piece is tested in milliseconds.

Thoughts are kept apart from the answer, as Ollama does: ``message.thinking`` on ``/api/chat``,
``thinking`` on ``/api/generate``. ``think: false`` asks the model not to think and drops what
it writes anyway; without ``think`` the model does as its template does by default.

Images (``images``: base64 files, with no media type) become OpenAI image parts with data URLs;
the media type is read from the file's first bytes (PNG, JPEG, WebP or GIF, the formats
``localserve.media`` decodes), and anything else is refused here, in Ollama's error shape. As in
Ollama, an image goes where the text has an ``[img]`` placeholder, and images without one go
before the text. They are taken on user messages, and on tool messages (moved to the user turn
that follows, ``lift_tool_images``); a raw or fill-in-the-middle ``/api/generate`` has no chat
template to place them, so images there are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Literal

from localserve.api.errors import APIError, api_error_from
from localserve.api.ids import new_call_id
from localserve.api.inference import InferenceCall
from localserve.api.keep_alive import parse_keep_alive
from localserve.api.media_types import image_media_type
from localserve.errors import BackendUnavailableError
from localserve.protocols.openai import (
    StreamedToolCalls,
    call_arguments,
    image_part,
    lift_tool_images,
    message_content,
    openai_body,
    reasoning_of,
    text_part,
)

OLLAMA_API_VERSION = "0.12.0"  # the Ollama API level these routes follow
NDJSON = "application/x-ndjson"
OPTION_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
THINK_LEVELS = ("low", "medium", "high")  # think's efforts, besides true and false
IMAGE_PLACEHOLDER = "[img]"  # where Ollama puts a message's next image in its text
IMAGE_ROLES = ("user", "tool")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def model_name(payload: dict[str, Any]) -> str:
    name = payload.get("model") or payload.get("name")
    if not isinstance(name, str) or not name.strip():
        raise APIError(400, "model is required")
    return name.strip().removesuffix(":latest")


def sampling(payload: dict[str, Any]) -> dict[str, Any]:
    """Ollama's ``options`` and ``format`` as OpenAI request fields."""
    options = payload.get("options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "options must be an object")
    fields = {OPTION_NAMES[k]: v for k, v in options.items() if k in OPTION_NAMES}
    predict = options.get("num_predict")
    if isinstance(predict, int) and predict > 0:
        fields["max_tokens"] = predict
    form = payload.get("format")
    if form == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(form, dict):
        fields["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "format", "schema": form},
        }
    return fields


def think_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """Ollama's ``think`` as OpenAI request fields: true (thinking on) and absent ask for
    nothing, false for ``enable_thinking: false`` (localserve's field, which cloud backends
    drop), a level for that effort."""
    think = payload.get("think")
    if think is None or think is True:
        return {}
    if think is False:
        return {"enable_thinking": False}
    if isinstance(think, str) and think in THINK_LEVELS:
        return {"reasoning_effort": think}
    raise APIError(400, 'think must be true, false, "low", "medium" or "high"')


def shows_thinking(payload: dict[str, Any]) -> bool:
    """Whether the answer carries the model's thoughts: not when ``think`` is false."""
    return payload.get("think") is not False


class Timing:
    """Ollama reports durations in nanoseconds; we measure them at the gateway."""

    def __init__(self) -> None:
        self.started = time.perf_counter_ns()
        self.first: int | None = None

    def mark_first(self) -> None:
        self.first = self.first or time.perf_counter_ns()

    def fields(self, usage: dict[str, Any]) -> dict[str, Any]:
        end = time.perf_counter_ns()
        first = self.first or end
        return {
            "total_duration": end - self.started,
            "load_duration": 0,
            "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
            "prompt_eval_duration": first - self.started,
            "eval_count": int(usage.get("completion_tokens") or 0),
            "eval_duration": end - first,
        }


def unloads_now(payload: dict[str, Any]) -> bool:
    """``keep_alive`` 0 in any of its spellings (0, "0", "0s", "0m"...): unload right away."""
    return parse_keep_alive(payload.get("keep_alive")) == 0


def ndjson(line: dict[str, Any]) -> bytes:
    return (json.dumps(line) + "\n").encode()


def done_fields(reason: str | None, timing: Timing, usage: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of Ollama's last line; a tool call ends a turn as "stop" there."""
    done_reason = "length" if reason == "length" else "stop"
    return {"done": True, "done_reason": done_reason, **timing.fields(usage or {})}


def ollama_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls in Ollama's shape: arguments as an object, not a JSON string."""
    result = []
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        arguments = call_arguments(function.get("arguments") or "")
        result.append(
            {
                "id": call.get("id") or "",
                "function": {
                    "index": index,
                    "name": function.get("name", ""),
                    "arguments": arguments,
                },
            }
        )
    return result


def image_data_url(image: Any, where: str) -> str:
    """One of Ollama's ``images`` (a base64 file) as a data URL. Only the first bytes are
    decoded here, to name the media type; the whole file is decoded, within limits, later."""
    if not isinstance(image, str) or not image.strip():
        raise APIError(400, f"{where} must be a base64-encoded image", param=where)
    data = "".join(image.split())  # line breaks, as some encoders wrap base64
    head = data[:16]
    try:
        first = base64.b64decode(head + "=" * (-len(head) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(
            400, f"{where} is not base64 (send the file's bytes base64-encoded)", param=where
        ) from exc
    media_type = image_media_type(first)
    if media_type is None:
        raise APIError(
            400, f"{where} is not a PNG, JPEG, WebP or GIF image", code="invalid_image", param=where
        )
    return f"data:{media_type};base64,{data}"


def image_parts(images: Any, where: str) -> list[dict[str, Any]]:
    """Ollama's ``images`` (at ``where``) as image parts ([] when there are none)."""
    if images is None:
        return []
    if not isinstance(images, list):
        raise APIError(400, f"{where} must be a list of base64 images", param=where)
    return [
        image_part(image_data_url(image, f"{where}.{index}")) for index, image in enumerate(images)
    ]


def with_images(text: str, images: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """The content of a message with ``images``, placed as Ollama places them: the first go
    where the text says ``[img]``, one each, and the rest before the text."""
    if not images:
        return text
    pieces = text.split(IMAGE_PLACEHOLDER)
    placed = min(len(pieces) - 1, len(images))
    parts = list(images[placed:])
    for index, image in enumerate(images[:placed]):
        parts += [text_part(pieces[index]), image]
    parts.append(text_part(IMAGE_PLACEHOLDER.join(pieces[placed:])))
    return message_content([part for part in parts if part.get("text") != ""])


def openai_chat_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Ollama's chat messages as OpenAI's. Ollama's tool calls carry no ids (older clients), so
    each tool result is matched to the latest unanswered call of its tool, or the first one."""
    result: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (call id, tool name)
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise APIError(400, f"messages.{index} must be an object")
        role = message.get("role")
        images = image_parts(message.get("images"), f"messages.{index}.images")
        if images and role not in IMAGE_ROLES:
            raise APIError(
                400,
                f"messages.{index}: images are accepted on user and tool messages only",
                param=f"messages.{index}.images",
            )
        text = message.get("content") or ""
        if images and not isinstance(text, str):
            raise APIError(400, f"messages.{index}.content must be a string")
        content = with_images(text, images) if isinstance(text, str) else text
        converted: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant" and message.get("thinking"):
            if not isinstance(message["thinking"], str):
                raise APIError(400, f"messages.{index}.thinking must be a string")
            converted["reasoning_content"] = message["thinking"]
        if role == "assistant" and message.get("tool_calls"):
            if not isinstance(message["tool_calls"], list):
                raise APIError(400, f"messages.{index}.tool_calls must be a list")
            converted["tool_calls"] = [openai_tool_call(call) for call in message["tool_calls"]]
            unanswered = [(c["id"], c["function"]["name"]) for c in converted["tool_calls"]]
        elif role == "tool":
            name = message.get("tool_name") or message.get("name")
            match = next((c for c in unanswered if c[1] == name), None)
            match = match or (unanswered[0] if unanswered else None)
            if match is not None:
                unanswered.remove(match)
            converted["tool_call_id"] = message.get("tool_call_id") or (match[0] if match else "")
        result.append(converted)
    return lift_tool_images(result)


def openai_tool_call(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise APIError(400, "tool_calls entries need a function with a name")
    arguments = function.get("arguments") or {}
    return {
        "id": call.get("id") or new_call_id(),
        "type": "function",
        "function": {
            "name": function["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


def error_object(err: APIError) -> dict[str, Any]:
    """Ollama's error body: ``{"error": message}``."""
    return {"error": err.message}


# -- requests ------------------------------------------------------------------------------
Unload = Callable[[], Awaitable[None]]  # unloads the request's model (keep_alive 0)


def streams(payload: dict[str, Any]) -> bool:
    """Ollama streams unless told ``"stream": false``."""
    return payload.get("stream", True) is not False


def inference_call(
    payload: dict[str, Any], path: str, fields: dict[str, Any], unload: Unload | None = None
) -> InferenceCall:
    """The OpenAI request for ``fields``, with the model, stream and keep_alive of ``payload``;
    ``unload`` runs after the answer when keep_alive is 0."""
    stream = streams(payload) and path != "/v1/embeddings"
    openai = openai_body(
        model_name(payload), stream, **fields, keep_alive=payload.get("keep_alive")
    )
    after = unload if unload is not None and unloads_now(payload) else None
    return InferenceCall(path, openai, stream, after)


def chat_call(payload: dict[str, Any], unload: Unload | None = None) -> InferenceCall:
    """``/api/chat`` as an OpenAI chat request."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list")
    fields = {"messages": openai_chat_messages(messages), **sampling(payload)}
    fields.update(think_fields(payload))
    if payload.get("tools"):
        fields["tools"] = payload["tools"]
    return inference_call(payload, "/v1/chat/completions", fields, unload)


def loads_only(payload: dict[str, Any]) -> bool:
    """An ``/api/generate`` with no prompt (nor suffix, nor images: those are never dropped
    unread): Ollama's way to load a model (or, with keep_alive 0, to unload it)."""
    return not payload.get("prompt") and not payload.get("suffix") and not payload.get("images")


def generate_call(payload: dict[str, Any], unload: Unload | None = None) -> InferenceCall:
    """``/api/generate`` as an OpenAI request: a completion for ``raw`` prompts and
    fill-in-the-middle (``suffix``), a one-turn chat otherwise."""
    prompt = payload.get("prompt") or ""
    if not isinstance(prompt, str):
        raise APIError(400, "prompt must be a string")
    thinking = think_fields(payload)  # checked always; a raw prompt has no template to tell
    images = image_parts(payload.get("images"), "images")
    if payload.get("raw") or payload.get("suffix"):
        if images:
            raise APIError(
                400,
                "images need the model's chat template: send them without raw and suffix",
                param="images",
            )
        fields: dict[str, Any] = {"prompt": prompt, **sampling(payload)}
        if payload.get("suffix"):
            fields["suffix"] = payload["suffix"]
        return inference_call(payload, "/v1/completions", fields, unload)
    messages = [{"role": "user", "content": with_images(prompt, images)}]
    if payload.get("system"):
        messages.insert(0, {"role": "system", "content": payload["system"]})
    fields = {"messages": messages, **sampling(payload), **thinking}
    return inference_call(payload, "/v1/chat/completions", fields, unload)


def embed_call(payload: dict[str, Any], unload: Unload | None = None) -> InferenceCall:
    """``/api/embed`` as an OpenAI embeddings request."""
    inputs = payload.get("input")
    if not isinstance(inputs, (str, list)) or not inputs:
        raise APIError(400, "input must be a string or a non-empty list of strings")
    return inference_call(payload, "/v1/embeddings", {"input": inputs}, unload)


def load_answer(model: str, reason: Literal["load", "unload"]) -> dict[str, Any]:
    """The answer to an ``/api/generate`` that only loads or unloads a model."""
    return {
        "model": model,
        "created_at": now_iso(),
        "response": "",
        "done": True,
        "done_reason": reason,
    }


# -- answers -------------------------------------------------------------------------------
class OllamaReply:
    """``/api/chat``'s or ``/api/generate``'s answer (one object, or NDJSON lines) from OpenAI's;
    the model's thoughts are left out when ``thinking`` is False (``think: false`` asked)."""

    media_type = NDJSON

    def __init__(
        self, model: str, endpoint: Literal["chat", "generate"], thinking: bool = True
    ) -> None:
        self.model = model
        self.endpoint = endpoint
        self.thinking = thinking
        self.timing = Timing()

    def line(
        self,
        text: str,
        calls: list[dict[str, Any]],
        done: dict[str, Any] | None = None,
        thought: str = "",
    ) -> dict[str, Any]:
        """One line: a piece of the answer (or of the thoughts), or with ``done`` fields the
        last one."""
        line: dict[str, Any] = {"model": self.model, "created_at": now_iso()}
        shown = {"thinking": thought} if thought and self.thinking else {}
        if self.endpoint == "chat":
            line["message"] = {
                "role": "assistant",
                "content": text,
                **shown,
                **({"tool_calls": calls} if calls else {}),
            }
        else:
            line.update(response=text, **shown)
        if done is None:
            return {**line, "done": False}
        return {**line, **done, **({"context": []} if self.endpoint == "generate" else {})}

    def whole(self, reply: dict[str, Any]) -> dict[str, Any]:
        choice = reply["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content") or choice.get("text") or ""
        calls = ollama_tool_calls(message.get("tool_calls") or [])
        done = done_fields(choice.get("finish_reason"), self.timing, reply.get("usage"))
        return self.line(text, calls, done, reasoning_of(message))

    async def stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        usage: dict[str, Any] = {}
        reason = None
        tool_calls = StreamedToolCalls()
        try:
            async for chunk in chunks:
                for choice in chunk.get("choices") or []:
                    for line in self.pieces(choice):
                        yield line
                    tool_calls.add(choice.get("delta") or {})
                    reason = choice.get("finish_reason") or reason
                usage = chunk.get("usage") or usage
        except BackendUnavailableError as exc:
            yield ndjson(error_object(api_error_from(exc)))
            return
        calls = ollama_tool_calls(tool_calls.calls())
        if calls:  # Ollama sends the calls in a line of their own, before the last
            yield ndjson(self.line("", calls))
        yield ndjson(self.line("", [], done_fields(reason, self.timing, usage)))

    def pieces(self, choice: dict[str, Any]) -> list[bytes]:
        """The lines of one chunk's choice: its thoughts (with content "", as Ollama sends
        them), then its text."""
        delta = choice.get("delta") or {}
        thought, text = reasoning_of(delta), delta.get("content") or choice.get("text")
        lines = []
        if thought and self.thinking:
            self.timing.mark_first()
            lines.append(ndjson(self.line("", [], thought=thought)))
        if text:
            self.timing.mark_first()
            lines.append(ndjson(self.line(text, [])))
        return lines


class EmbedReply:
    """``/api/embed``'s answer from OpenAI's embeddings."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.timing = Timing()

    def whole(self, reply: dict[str, Any]) -> dict[str, Any]:
        timing = self.timing.fields(reply.get("usage") or {})
        kept = ("total_duration", "load_duration", "prompt_eval_count")
        return {
            "model": self.model,
            "embeddings": [item["embedding"] for item in reply["data"]],
            **{key: timing[key] for key in kept},
        }
