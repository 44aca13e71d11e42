"""OpenAI's Responses API (``POST /v1/responses``), translated: its ``input`` items,
``instructions``, function tools and options into a chat completions request, and the chat
answer back into a response object or the Responses event stream (``response.created`` ...
``response.completed``). Pure: no HTTP, no FastAPI (the route is in ``server/routes/openai.py``).

Served so far: text and function-call turns, whole and streamed, and stored responses for
``previous_response_id`` (``server/response_store.py``). Not yet: reasoning items, built-in
tools (issue 20).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from localserve.api.errors import APIError, api_error_from
from localserve.api.ids import new_call_id
from localserve.api.inference import InferenceCall
from localserve.api.sse import sse_event
from localserve.errors import BackendUnavailableError
from localserve.protocols.openai import StreamedToolCalls, error_object, openai_body

TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


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


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- the request -----------------------------------------------------------------------------
def text_of(content: Any, where: str) -> str:
    """A message's content, string or parts, as text (images are refused, not dropped)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a string or a list of parts", param=where)
    pieces = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        elif kind == "input_image":
            raise APIError(400, f"{where}.content.{index}: images are not supported yet")
        else:
            raise APIError(400, f"{where}.content.{index} must be an input_text part")
    return "".join(pieces)


def input_messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    """``input`` as chat messages: consecutive ``function_call`` items become one assistant
    turn's tool calls, ``function_call_output`` items tool messages."""
    if isinstance(body.input, str):
        return [{"role": "user", "content": body.input}]
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(body.input):
        where = f"input.{index}"
        kind = item.get("type", "message")
        if kind == "message":
            role = ROLES.get(str(item.get("role")))
            if role is None:
                raise APIError(400, f"{where}.role must be user, assistant, system or developer")
            messages.append({"role": role, "content": text_of(item.get("content"), where)})
        elif kind == "function_call":
            call = function_call(item, where)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(item.get("call_id"), str) or not isinstance(output, str):
                raise APIError(400, f"{where} needs a call_id and an output string")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        elif kind == "reasoning":
            continue  # earlier thoughts: not part of the prompt
        else:
            raise APIError(400, f"{where}: items of type '{kind}' are not supported")
    if not messages:
        raise APIError(400, "input must not be empty", param="input")
    return messages


def output_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's output as the chat messages a follow-up's prompt holds."""
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


def responses_call(body: ResponsesRequest, conversation: list[dict[str, Any]]) -> InferenceCall:
    """The chat request for ``body``; ``conversation`` is what came before (its
    ``previous_response_id``'s, with that response's output last) followed by the new input.
    Instructions are not carried over from a previous response, as in OpenAI's API."""
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    payload = openai_body(
        body.model,
        body.stream,
        messages=system + conversation,
        **chat_tools(body),
        **response_format(body.text),
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
    )
    return InferenceCall("/v1/chat/completions", payload, body.stream)


# -- the answer ------------------------------------------------------------------------------
def usage_of(usage: dict[str, Any] | None) -> dict[str, Any]:
    prompt = int((usage or {}).get("prompt_tokens") or 0)
    completion = int((usage or {}).get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
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
    """The response object, or the Responses event stream, from a chat completion."""

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
            "reasoning": {"effort": None, "summary": None},
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
        text, message_id, reason = "", new_id("msg"), None
        usage: dict[str, Any] | None = None
        calls = StreamedToolCalls()
        try:
            async for chunk in chunks:
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        if not text:
                            for event in self.text_opens(message_id):
                                yield event
                        text += delta["content"]
                        yield self.event(
                            "response.output_text.delta",
                            item_id=message_id,
                            output_index=0,
                            content_index=0,
                            delta=delta["content"],
                        )
                    calls.add(delta)
                    reason = choice.get("finish_reason") or reason
                usage = chunk.get("usage") or usage
        except BackendUnavailableError as exc:
            error = error_object(api_error_from(exc))["error"]
            yield self.event("error", code=error.get("code"), message=error["message"], param=None)
            return
        output: list[dict[str, Any]] = []
        if text:
            for event in self.text_closes(message_id, text):
                yield event
            output.append(message_item(message_id, text))
        for call in calls.calls():
            item = call_item(call)
            index = len(output)
            added = {**item, "arguments": "", "status": "in_progress"}
            yield self.event("response.output_item.added", output_index=index, item=added)
            yield self.event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=item["arguments"],
            )
            yield self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
            yield self.event("response.output_item.done", output_index=index, item=item)
            output.append(item)
        status = "incomplete" if reason == "length" else "completed"
        final = "response.incomplete" if status == "incomplete" else "response.completed"
        yield self.event(final, response=self.finished(self.response(status, output, usage)))

    def text_opens(self, message_id: str) -> list[bytes]:
        return [
            self.event(
                "response.output_item.added",
                output_index=0,
                item={**message_item(message_id, "", "in_progress"), "content": []},
            ),
            self.event(
                "response.content_part.added",
                item_id=message_id,
                output_index=0,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
        ]

    def text_closes(self, message_id: str, text: str) -> list[bytes]:
        part = {"type": "output_text", "text": text, "annotations": []}
        return [
            self.event(
                "response.output_text.done",
                item_id=message_id,
                output_index=0,
                content_index=0,
                text=text,
            ),
            self.event(
                "response.content_part.done",
                item_id=message_id,
                output_index=0,
                content_index=0,
                part=part,
            ),
            self.event(
                "response.output_item.done", output_index=0, item=message_item(message_id, text)
            ),
        ]
