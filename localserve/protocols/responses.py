"""OpenAI's Responses API (``POST /v1/responses``), translated: its ``input`` items,
``instructions``, function tools, ``reasoning`` and options into a chat completions request, and
the chat answer back into a response object or the Responses event stream (``response.created``
... ``response.completed``). Pure: no HTTP, no FastAPI (the route is in
``server/routes/responses.py``).

Served: text and function-call turns, whole and streamed; images (``input_image`` parts with
an ``image_url``, in user messages and function call outputs, become chat's ``image_url``
parts; see ``protocols/openai.py``'s ``lift_tool_images`` for the latter); stored responses for
``previous_response_id`` (``server/response_store.py``); reasoning. A thinking model's thoughts
(chat's ``reasoning_content``) become a ``reasoning`` item before the message, with the thought
in ``content`` as ``reasoning_text``, the shape OpenAI gives for open-weight models (gpt-oss);
there are no summaries and no ``encrypted_content``. A reasoning item sent back as input is the
next assistant turn's ``reasoning_content``. Not yet: built-in tools (issue 20).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from localserve.api.errors import APIError, api_error_from
from localserve.api.ids import new_call_id
from localserve.api.inference import InferenceCall
from localserve.api.requests import ImageDetail, ReasoningEffort
from localserve.api.sse import sse_event
from localserve.errors import BackendUnavailableError
from localserve.protocols.openai import (
    StreamedToolCalls,
    error_object,
    image_part,
    lift_tool_images,
    message_content,
    openai_body,
    reasoning_of,
    text_part,
)

TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
IMAGE_DETAILS = get_args(ImageDetail)
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


class Reasoning(BaseModel):
    """The request's ``reasoning``. ``effort`` is chat's ``reasoning_effort`` ("none" asks a
    model not to think, where its template lets it); ``summary`` is accepted and ignored, as no
    summaries are written."""

    model_config = ConfigDict(extra="allow")

    effort: ReasoningEffort | None = None


class ResponsesRequest(BaseModel):
    """The fields of ``POST /v1/responses`` that localserve reads; others are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    text: dict[str, Any] | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    reasoning: Reasoning | None = None

    @property
    def effort(self) -> str | None:
        return self.reasoning.effort if self.reasoning is not None else None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- the request -----------------------------------------------------------------------------
def content_of(content: Any, where: str, images: bool) -> str | list[dict[str, Any]]:
    """A message's content (or a function call's output) at ``where``, a string or parts, as
    chat content: text parts as one string, or, with ``input_image`` parts (where ``images``
    allows them), the parts in order. An image where none may be is refused, never dropped."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where} must be a string or a list of parts", param=where)
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        at = f"{where}.{index}"
        if isinstance(kind, str) and kind in TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append(text_part(part["text"]))
        elif kind == "input_image" and images:
            parts.append(input_image(part, at))
        elif kind == "input_image":
            raise APIError(
                400, f"{at}: images are accepted in user messages only", param=f"{at}.type"
            )
        else:
            raise APIError(400, f"{at} must be an input_text or input_image part", param=at)
    return message_content(parts)


def input_image(part: dict[str, Any], where: str) -> dict[str, Any]:
    """An ``input_image`` part as chat's image part: its ``image_url`` (a data: or http(s)
    URL) and its ``detail``. Uploaded files (``file_id``) are not served."""
    url, detail = part.get("image_url"), part.get("detail")
    if not isinstance(url, str) or not url:
        if part.get("file_id") is not None:
            raise APIError(
                400,
                f"{where}: images by file_id are not supported (there is no Files API); send "
                "image_url, a data: or http(s) URL",
                param=f"{where}.file_id",
            )
        raise APIError(400, f"{where}.image_url must be a URL", param=f"{where}.image_url")
    if detail is not None and detail not in IMAGE_DETAILS:
        raise APIError(
            400,
            f"{where}.detail must be one of {', '.join(IMAGE_DETAILS)}",
            param=f"{where}.detail",
        )
    return image_part(url, detail)


def input_messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    """``input`` as chat messages: consecutive ``function_call`` items become one assistant
    turn's tool calls, ``function_call_output`` items tool messages, and a ``reasoning`` item
    the ``reasoning_content`` of the assistant turn that follows it."""
    if isinstance(body.input, str):
        return [{"role": "user", "content": body.input}]
    messages: list[dict[str, Any]] = []
    thought = ""  # a reasoning item's, waiting for its assistant turn
    for index, item in enumerate(body.input):
        where = f"input.{index}"
        kind = item.get("type", "message")
        if kind == "reasoning":
            thought += reasoning_text(item, where)
            continue
        message = input_message(item, kind, where, messages)
        if message is not None:
            messages.append(message)
        if thought and messages and messages[-1]["role"] == "assistant":
            last = messages[-1]
            last["reasoning_content"] = last.get("reasoning_content", "") + thought
            thought = ""
    if not messages:
        raise APIError(400, "input must not be empty", param="input")
    return lift_tool_images(messages)


def input_message(
    item: dict[str, Any], kind: Any, where: str, messages: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """One input item as a chat message, or None when it joins the last one (a function call
    after another is the same assistant turn's)."""
    if kind == "message":
        role = ROLES.get(str(item.get("role")))
        if role is None:
            raise APIError(400, f"{where}.role must be user, assistant, system or developer")
        return {
            "role": role,
            "content": content_of(item.get("content"), f"{where}.content", role == "user"),
        }
    if kind == "function_call":
        call = function_call(item, where)
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
            return None
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(item.get("call_id"), str) or not isinstance(output, (str, list)):
            raise APIError(400, f"{where} needs a call_id and an output, a string or parts")
        content = content_of(output, f"{where}.output", images=True)
        return {"role": "tool", "tool_call_id": item["call_id"], "content": content}
    raise APIError(400, f"{where}: items of type '{kind}' are not supported")


def reasoning_text(item: dict[str, Any], where: str) -> str:
    """A reasoning item's thought: its ``reasoning_text`` parts ("" when it has none, such as
    OpenAI's own items, whose thoughts are encrypted or only summarised)."""
    content = item.get("content") or []
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a list of reasoning_text parts")
    pieces = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise APIError(400, f"{where}.content.{index} must be a reasoning_text part")
        pieces.append(part["text"])
    return "".join(pieces)


def output_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's output as the chat messages a follow-up's prompt holds: one assistant turn,
    its reasoning items' thoughts as ``reasoning_content``."""
    thought = "".join(
        part.get("text", "")
        for item in response["output"]
        if item["type"] == "reasoning"
        for part in item.get("content") or []
    )
    text = "".join(
        part.get("text", "")
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in response["output"]
        if item["type"] == "function_call"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if thought:
        message["reasoning_content"] = thought
    return [{**message, "tool_calls": calls} if calls else message]


def function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    name, arguments = item.get("name"), item.get("arguments", "")
    if not isinstance(name, str) or not isinstance(arguments, str):
        raise APIError(400, f"{where} needs a name and an arguments string")
    call_id = item.get("call_id") if isinstance(item.get("call_id"), str) else new_call_id()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_tools(body: ResponsesRequest) -> dict[str, Any]:
    """Function tools and ``tool_choice`` in chat completions' shape."""
    tools = []
    for index, tool in enumerate(body.tools):
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise APIError(400, f"tools.{index}: only function tools are supported", "tools")
        function = {"name": tool["name"], "parameters": tool.get("parameters") or {}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    fields: dict[str, Any] = {"tools": tools} if tools else {}
    choice = body.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise APIError(400, "tool_choice must name a function", param="tool_choice")
        fields["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None and tools:
        fields["tool_choice"] = choice
    return fields


def response_format(text: dict[str, Any] | None) -> dict[str, Any]:
    form = (text or {}).get("format")
    if not isinstance(form, dict) or form.get("type") in (None, "text"):
        return {}
    if form["type"] == "json_object":
        return {"response_format": {"type": "json_object"}}
    if form["type"] == "json_schema" and isinstance(form.get("schema"), dict):
        schema = {"name": form.get("name") or "format", "schema": form["schema"]}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise APIError(400, "text.format must be text, json_object or json_schema", "text.format")


def chat_messages(
    body: ResponsesRequest, conversation: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The prompt's messages: ``conversation`` is what came before (its
    ``previous_response_id``'s, with that response's output last) followed by the new input.
    Instructions are not carried over from a previous response, as in OpenAI's API."""
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    return system + conversation


def input_tokens_payload(
    body: ResponsesRequest, conversation: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the runner's ``/tokenize/chat`` counts for ``POST /v1/responses/input_tokens``: the
    prompt the response would have, tools and reasoning effort included (templates write both
    into it)."""
    return openai_body(
        body.model,
        False,
        messages=chat_messages(body, conversation),
        **chat_tools(body),
        reasoning_effort=body.effort,
    )


def responses_call(body: ResponsesRequest, conversation: list[dict[str, Any]]) -> InferenceCall:
    """The chat request for ``body`` after ``conversation`` (see ``chat_messages``)."""
    payload = openai_body(
        body.model,
        body.stream,
        messages=chat_messages(body, conversation),
        **chat_tools(body),
        **response_format(body.text),
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        reasoning_effort=body.effort,
    )
    return InferenceCall("/v1/chat/completions", payload, body.stream)


# -- the answer ------------------------------------------------------------------------------
def usage_of(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Chat's usage in the Responses API's shape. Cloud backends may leave out
    ``completion_tokens_details``: no reasoning tokens, then."""
    prompt = int((usage or {}).get("prompt_tokens") or 0)
    completion = int((usage or {}).get("completion_tokens") or 0)
    details = (usage or {}).get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning or 0)},
        "total_tokens": prompt + completion,
    }


def reasoning_item(item_id: str, thought: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": thought}],
        "status": status,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(call: dict[str, Any], item_id: str | None = None) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "call_id": call.get("id") or new_call_id(),
        "name": function.get("name", ""),
        "arguments": function.get("arguments") or "",
        "status": "completed",
    }


class ResponsesReply:
    """The response object, or the Responses event stream, from a chat completion. Thoughts
    come back as a reasoning item unless the request's effort was "none" (a model that cannot
    stop thinking still thinks; the client asked not to see it)."""

    media_type = "text/event-stream"

    def __init__(
        self, body: ResponsesRequest, keep: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """``keep`` is called with the finished response, to store it."""
        self.body = body
        self.keep = keep
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.sequence = 0
        self.shows_thoughts = body.effort != "none"

    def response(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        body = self.body
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": body.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": body.effort, "summary": None},
            "store": self.keep is not None,
            "temperature": body.temperature,
            "text": body.text or {"format": {"type": "text"}},
            "tool_choice": body.tool_choice or "auto",
            "tools": body.tools,
            "top_p": body.top_p,
            "truncation": "disabled",
            "usage": None if usage is None else usage_of(usage),
            "metadata": {},
        }

    def whole(self, reply: dict[str, Any]) -> dict[str, Any]:
        choice = reply["choices"][0]
        message = choice.get("message") or {}
        output: list[dict[str, Any]] = []
        if reasoning_of(message) and self.shows_thoughts:
            output.append(reasoning_item(new_id("rs"), reasoning_of(message)))
        if message.get("content"):
            output.append(message_item(new_id("msg"), message["content"]))
        output += [call_item(call) for call in message.get("tool_calls") or []]
        status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
        return self.finished(self.response(status, output, reply.get("usage")))

    def finished(self, response: dict[str, Any]) -> dict[str, Any]:
        if self.keep is not None:
            self.keep(response)
        return response

    def event(self, kind: str, **fields: Any) -> bytes:
        self.sequence += 1
        return sse_event(kind, {"type": kind, "sequence_number": self.sequence - 1, **fields})

    async def stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        yield self.event("response.created", response=self.response("in_progress", [], None))
        yield self.event("response.in_progress", response=self.response("in_progress", [], None))
        items = OutputItems(self.event)
        reason, usage = None, None
        calls = StreamedToolCalls()
        try:
            async for chunk in chunks:
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    for event in items.delta(delta, self.shows_thoughts):
                        yield event
                    calls.add(delta)
                    reason = choice.get("finish_reason") or reason
                usage = chunk.get("usage") or usage
        except BackendUnavailableError as exc:
            error = error_object(api_error_from(exc))["error"]
            yield self.event("error", code=error.get("code"), message=error["message"], param=None)
            return
        for event in items.calls(calls.calls()):
            yield event
        status = "incomplete" if reason == "length" else "completed"
        final = "response.incomplete" if status == "incomplete" else "response.completed"
        response = self.response(status, items.output, usage)
        yield self.event(final, response=self.finished(response))


# Each streamed item with text: its id's prefix, and its text events' (``.delta``, ``.done``).
TEXT_ITEMS = {
    "reasoning": ("rs", "response.reasoning_text"),
    "message": ("msg", "response.output_text"),
}


class OutputItems:
    """A streamed response's output, item by item, as the documented events announce it: the
    reasoning item and the message open when their first piece of text arrives and close when
    another item begins (thoughts come first, so the message follows them); function calls come
    last, whole. Each item's ``output_index`` is its place in ``output``."""

    def __init__(self, event: Callable[..., bytes]) -> None:
        self.event = event
        self.output: list[dict[str, Any]] = []  # the items closed so far
        self.open_kind: str | None = None  # "reasoning" or "message", while one is open
        self.open_id = ""
        self.text = ""

    def delta(self, delta: dict[str, Any], thoughts: bool) -> list[bytes]:
        events: list[bytes] = []
        if thoughts and reasoning_of(delta):
            events += self.piece("reasoning", reasoning_of(delta))
        if delta.get("content"):
            events += self.piece("message", delta["content"])
        return events

    def piece(self, kind: str, text: str) -> list[bytes]:
        events = [] if self.open_kind == kind else self.open(kind)
        self.text += text
        where = {"item_id": self.open_id, "output_index": len(self.output), "content_index": 0}
        return [*events, self.event(f"{TEXT_ITEMS[kind][1]}.delta", **where, delta=text)]

    def open(self, kind: str) -> list[bytes]:
        events = self.close()
        self.open_kind, self.open_id, self.text = kind, new_id(TEXT_ITEMS[kind][0]), ""
        index = len(self.output)
        added = {**self.item("in_progress"), "content": []}
        return [
            *events,
            self.event("response.output_item.added", output_index=index, item=added),
            self.event(
                "response.content_part.added",
                item_id=self.open_id,
                output_index=index,
                content_index=0,
                part=self.part(""),
            ),
        ]

    def part(self, text: str) -> dict[str, Any]:
        if self.open_kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        return {"type": "output_text", "text": text, "annotations": []}

    def item(self, status: str) -> dict[str, Any]:
        if self.open_kind == "reasoning":
            return reasoning_item(self.open_id, self.text, status)
        return message_item(self.open_id, self.text, status)

    def close(self) -> list[bytes]:
        """The open item's closing events (its text, its part, the item), if one is open."""
        if self.open_kind is None:
            return []
        where = {"item_id": self.open_id, "output_index": len(self.output), "content_index": 0}
        item = self.item("completed")
        events = [
            self.event(f"{TEXT_ITEMS[self.open_kind][1]}.done", **where, text=self.text),
            self.event("response.content_part.done", **where, part=self.part(self.text)),
            self.event("response.output_item.done", output_index=len(self.output), item=item),
        ]
        self.output.append(item)
        self.open_kind = None
        return events

    def calls(self, calls: list[dict[str, Any]]) -> list[bytes]:
        """The open item closed, then each function call's events (its arguments in one piece)."""
        events = self.close()
        for call in calls:
            item = call_item(call)
            index = len(self.output)
            added = {**item, "arguments": "", "status": "in_progress"}
            arguments = {"item_id": item["id"], "output_index": index}
            events += [
                self.event("response.output_item.added", output_index=index, item=added),
                self.event(
                    "response.function_call_arguments.delta", **arguments, delta=item["arguments"]
                ),
                self.event(
                    "response.function_call_arguments.done",
                    **arguments,
                    arguments=item["arguments"],
                ),
                self.event("response.output_item.done", output_index=index, item=item),
            ]
            self.output.append(item)
        return events
