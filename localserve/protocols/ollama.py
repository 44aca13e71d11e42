"""Ollama's API, translated: its chat messages, options and tool calls to OpenAI's, and OpenAI's
answers back to Ollama's NDJSON lines. Pure: no HTTP, no FastAPI (the routes are in
``server/routes/ollama.py``), so each piece is tested in milliseconds."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from localserve.api.errors import APIError
from localserve.api.ids import new_call_id
from localserve.api.keep_alive import parse_keep_alive
from localserve.protocols.openai import call_arguments

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


def openai_chat_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Ollama's chat messages as OpenAI's. Ollama's tool calls carry no ids (older clients), so
    each tool result is matched to the latest unanswered call of its tool, or the first one."""
    result: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (call id, tool name)
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise APIError(400, f"messages.{index} must be an object")
        if message.get("images"):
            raise APIError(
                400, f"messages.{index}: images are not supported; localserve serves text models."
            )
        role = message.get("role")
        converted: dict[str, Any] = {"role": role, "content": message.get("content") or ""}
        if role == "assistant" and message.get("tool_calls"):
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
    return result


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
