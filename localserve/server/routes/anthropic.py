"""Anthropic's Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``) over the same
models, keys and routing as the OpenAI API.

A request is translated into an OpenAI chat request, routed like any other (local runner or
cloud provider), and the answer translated back: a message object, or Anthropic's stream of
``message_start`` ... ``message_stop`` events. Errors use Anthropic's shape (server/errors.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response, StreamingResponse

from localserve.errors import BackendUnavailableError
from localserve.router.local import LOCAL_BACKEND
from localserve.router.router import Router
from localserve.server.disconnect import cancel_on_disconnect
from localserve.server.errors import APIError, api_error_from
from localserve.server.relay import BACKEND_HEADER
from localserve.server.routes.openai import read_json, validate
from localserve.server.upstream import ensure_ok, json_body, open_route, openai_chunks

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class TextBlock(BaseModel):
    type: Literal["text"]
    text: str


class AnthropicMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(BaseModel):
    model: str
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


class CountTokensRequest(BaseModel):
    model: str
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


def text_of(content: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if block.get("type") != "text":
            raise APIError(
                400,
                f"{where}: content blocks of type '{block.get('type')}' are not supported yet; "
                "send text blocks.",
            )
        parts.append(TextBlock.model_validate(block).text)
    return "".join(parts)


def openai_messages(body: MessagesRequest | CountTokensRequest) -> list[dict[str, str]]:
    if body.tools:
        raise APIError(400, "Tool use through the Messages API is not supported yet.")
    messages = []
    if body.system:
        messages.append({"role": "system", "content": text_of(body.system, "system")})
    for index, message in enumerate(body.messages):
        messages.append(
            {"role": message.role, "content": text_of(message.content, f"messages.{index}")}
        )
    return messages


def openai_request(body: MessagesRequest) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": body.model,
        "messages": openai_messages(body),
        "max_tokens": body.max_tokens,
        "stream": body.stream,
    }
    if body.stream:
        payload["stream_options"] = {"include_usage": True}
    optional = {
        "stop": body.stop_sequences,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
    }
    payload.update({key: value for key, value in optional.items() if value is not None})
    return payload


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
        "content": [{"type": "text", "text": choice["message"].get("content") or ""}],
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def message_events(model: str, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Anthropic's event sequence for one text block, from OpenAI chunks."""
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
    yield sse("message_start", {"type": "message_start", "message": start})
    yield sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield sse("ping", {"type": "ping"})
    finish = "stop"
    usage: dict[str, Any] = {}
    try:
        async for chunk in chunks:
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    delta = {"type": "text_delta", "text": text}
                    yield sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                    )
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
    except BackendUnavailableError as exc:
        error = {"type": "api_error", "message": api_error_from(exc).message}
        yield sse("error", {"type": "error", "error": error})
        return
    yield sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield sse(
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
    yield sse("message_stop", {"type": "message_stop"})


def anthropic_routes(router: Router) -> APIRouter:
    api = APIRouter(prefix="/v1/messages")

    @api.post("")
    async def messages(request: Request) -> Response:
        body = validate(MessagesRequest, await read_json(request))
        payload = openai_request(body)

        async def answer() -> Response:
            backend, upstream = await open_route(router, "/v1/chat/completions", payload)
            headers = {BACKEND_HEADER: backend.name}
            if not body.stream:
                reply = await json_body(upstream)
                return JSONResponse(message_object(body.model, reply), headers=headers)
            await ensure_ok(upstream)
            return StreamingResponse(
                message_events(body.model, openai_chunks(upstream)),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )

        return await cancel_on_disconnect(request, answer())

    @api.post("/count_tokens")
    async def count_tokens(request: Request) -> Response:
        body = validate(CountTokensRequest, await read_json(request))
        payload = {"model": body.model, "messages": openai_messages(body)}
        route = router.route(body.model)
        if route.backend.name != LOCAL_BACKEND:
            raise APIError(
                400, "count_tokens works for local models only; cloud providers count their own."
            )
        counted = await json_body(await route.backend.send("/tokenize/chat", payload))
        return JSONResponse({"input_tokens": counted["input_tokens"]})

    return api
