"""Anthropic's Messages API, translated: its requests (messages, content blocks, tools, tool
choice) into an OpenAI chat request, and OpenAI's answers back into a message object or
Anthropic's event stream (``message_start`` ... ``message_stop``). Pure: no HTTP, no FastAPI (the
routes are in ``server/routes/anthropic.py``)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, Field

from localserve.api.errors import APIError, api_error_from
from localserve.api.inference import InferenceCall
from localserve.api.requests import validate
from localserve.api.sse import sse_event
from localserve.errors import BackendUnavailableError
from localserve.protocols.openai import call_arguments, openai_body

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class TextBlock(BaseModel):
    type: Literal["text"]
    text: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[dict[str, Any]] = ""
    is_error: bool = False


class AnthropicTool(BaseModel):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None


class ToolChoice(BaseModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class AnthropicMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class CountTokensRequest(BaseModel):
    model: str
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None


# Blocks a local model cannot use: Claude's own reasoning, sent back by agents that switch models.
SKIPPED_BLOCKS = {"thinking", "redacted_thinking"}


def text_of(content: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        kind = block.get("type")
        if isinstance(kind, str) and kind in SKIPPED_BLOCKS:  # a list or an object is no type
            continue
        if kind != "text":
            raise APIError(
                400,
                f"{where}: content blocks of type '{kind}' are not supported; "
                "send text, tool_use and tool_result blocks.",
            )
        parts.append(validate(TextBlock, block).text)
    return "".join(parts)


def openai_tools(body: CountTokensRequest) -> dict[str, Any]:
    """Anthropic's ``tools`` and ``tool_choice`` as OpenAI request fields."""
    if not body.tools:
        return {}
    tools = []
    for index, raw in enumerate(body.tools):
        if raw.get("type") not in (None, "custom"):
            raise APIError(
                400,
                f"tools.{index}: Anthropic's server tools ('{raw.get('type')}') run only on "
                "Anthropic's platform; define a custom tool with name and input_schema.",
            )
        tool = validate(AnthropicTool, raw)
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    fields: dict[str, Any] = {"tools": tools}
    choice = body.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise APIError(400, "tool_choice of type 'tool' needs a name.")
            fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            fields["parallel_tool_calls"] = False
    return fields


def user_messages(content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn as OpenAI messages: a tool message per tool_result, then the text."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results = [block for block in content if block.get("type") == "tool_result"]
    rest = [block for block in content if block.get("type") != "tool_result"]
    messages = []
    for block in results:
        result = validate(ToolResultBlock, block)
        text = text_of(result.content, f"{where}.tool_result")
        messages.append(
            {
                "role": "tool",
                "tool_call_id": result.tool_use_id,
                "content": f"Error: {text}" if result.is_error else text,
            }
        )
    if rest or not results:
        messages.append({"role": "user", "content": text_of(rest, where)})
    return messages


def assistant_message(content: str | list[dict[str, Any]], where: str) -> dict[str, Any]:
    """One Anthropic assistant turn (text and tool_use blocks) as an OpenAI message."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    uses = [validate(ToolUseBlock, b) for b in content if b.get("type") == "tool_use"]
    text = text_of([b for b in content if b.get("type") != "tool_use"], where)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if uses:
        message["tool_calls"] = [
            {
                "id": use.id,
                "type": "function",
                "function": {"name": use.name, "arguments": json.dumps(use.input)},
            }
            for use in uses
        ]
    return message


def openai_messages(body: CountTokensRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": text_of(body.system, "system")})
    for index, message in enumerate(body.messages):
        where = f"messages.{index}"
        if message.role == "assistant":
            messages.append(assistant_message(message.content, where))
        else:
            messages.extend(user_messages(message.content, where))
    return messages


def openai_request(body: MessagesRequest) -> dict[str, Any]:
    return openai_body(
        body.model,
        body.stream,
        messages=openai_messages(body),
        max_tokens=body.max_tokens,
        **openai_tools(body),
        stop=body.stop_sequences,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
    )


def messages_call(body: MessagesRequest) -> InferenceCall:
    return InferenceCall("/v1/chat/completions", openai_request(body), body.stream)


class AnthropicReply:
    """Anthropic's message object, or its event stream, from OpenAI's answer."""

    media_type = "text/event-stream"

    def __init__(self, model: str) -> None:
        self.model = model

    def whole(self, reply: dict[str, Any]) -> dict[str, Any]:
        return message_object(self.model, reply)

    def stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        return message_events(self.model, chunks)


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_object(err: APIError) -> dict[str, Any]:
    """Anthropic's error body: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = ERROR_TYPES.get(err.status_code, "api_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def message_object(model: str, reply: dict[str, Any]) -> dict[str, Any]:
    choice = reply["choices"][0]
    usage = reply.get("usage") or {}
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(choice["message"]),
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


def content_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls") or []
    text = message.get("content") or ""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text or not calls else []
    for call in calls:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                "name": function.get("name", ""),
                "input": call_arguments(function.get("arguments", "")),
            }
        )
    return blocks


class ContentBlocks:
    """Anthropic's content block events from OpenAI deltas: text goes to a text block, each
    tool call to a tool_use block whose input arrives as ``input_json_delta`` pieces."""

    def __init__(self) -> None:
        self.index = -1
        self.open_kind: str | None = None
        self.open_call: int | None = None  # the OpenAI index of the open tool call

    def _start(self, block: dict[str, Any]) -> list[bytes]:
        events = self.stop()
        self.index += 1
        self.open_kind = block["type"]
        events.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        )
        if self.index == 0:
            events.append(sse_event("ping", {"type": "ping"}))
        return events

    def _delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": self.index, "delta": delta}
        return sse_event("content_block_delta", payload)

    def text(self, text: str) -> list[bytes]:
        events = [] if self.open_kind == "text" else self._start({"type": "text", "text": ""})
        return [*events, self._delta({"type": "text_delta", "text": text})]

    def tool_call(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        function = call.get("function") or {}
        if self.open_kind != "tool_use" or call.get("index", 0) != self.open_call:
            self.open_call = call.get("index", 0)
            block = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                "name": function.get("name", ""),
                "input": {},
            }
            events = self._start(block)
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(self._delta(delta))
        return events

    def stop(self) -> list[bytes]:
        if self.open_kind is None:
            return []
        self.open_kind = None
        return [
            sse_event("content_block_stop", {"type": "content_block_stop", "index": self.index})
        ]


async def message_events(model: str, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Anthropic's event sequence, from OpenAI chunks."""
    start: dict[str, Any] = {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield sse_event("message_start", {"type": "message_start", "message": start})
    blocks = ContentBlocks()
    finish = "stop"
    usage: dict[str, Any] = {}
    try:
        async for chunk in chunks:
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    for event in blocks.text(delta["content"]):
                        yield event
                for call in delta.get("tool_calls") or []:
                    for event in blocks.tool_call(call):
                        yield event
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
    except BackendUnavailableError as exc:
        yield sse_event("error", error_object(api_error_from(exc)))
        return
    if blocks.index < 0:  # nothing was generated: still one (empty) text block
        for event in blocks.text(""):
            yield event
    for event in blocks.stop():
        yield event
    yield sse_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASONS.get(finish, "end_turn"), "stop_sequence": None},
            "usage": {
                "input_tokens": int(usage.get("prompt_tokens") or 0),
                "output_tokens": int(usage.get("completion_tokens") or 0),
            },
        },
    )
    yield sse_event("message_stop", {"type": "message_stop"})
