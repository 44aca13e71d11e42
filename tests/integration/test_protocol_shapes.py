"""Golden checks: what we stream has the shape of the protocols' own documented examples.

The examples below are copied from Ollama's API reference (docs/api.md: "Generate a chat
completion", "Chat request (with tools)", "Generate a completion") and Anthropic's streaming
guide ("Basic streaming request", "Streaming request with tool use"). Every key they show must
be in our answer with a value of the same JSON type; we may send more keys.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.model_files import templated_starter
from tests.helpers.shapes import assert_shape

OLLAMA_CHAT_CHUNK = {
    "model": "llama3.2",
    "created_at": "2023-08-04T08:52:19.385406455-07:00",
    "message": {"role": "assistant", "content": "The", "images": None},
    "done": False,
}
OLLAMA_CHAT_FINAL = {
    "model": "llama3.2",
    "created_at": "2023-08-04T19:22:45.499127Z",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}
OLLAMA_TOOL_REPLY = {
    "model": "llama3.2",
    "created_at": "2024-07-22T20:33:28.123648Z",
    "message": {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "function": {
                    "name": "get_current_weather",
                    "arguments": {"format": "celsius", "location": "Paris, FR"},
                }
            }
        ],
    },
    "done_reason": "stop",
    "done": True,
    "total_duration": 885095291,
    "load_duration": 3753500,
    "prompt_eval_count": 122,
    "prompt_eval_duration": 328493000,
    "eval_count": 33,
    "eval_duration": 552222000,
}
OLLAMA_GENERATE_CHUNK = {
    "model": "llama3.2",
    "created_at": "2023-08-04T08:52:19.385406455-07:00",
    "response": "The",
    "done": False,
}
OLLAMA_GENERATE_FINAL = {
    "model": "llama3.2",
    "created_at": "2023-08-04T19:22:45.499127Z",
    "response": "",
    "done": True,
    "context": [1, 2, 3],
    "total_duration": 10706818083,
    "load_duration": 6338219291,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 130079000,
    "eval_count": 259,
    "eval_duration": 4232710000,
}

ANTHROPIC_TEXT_STREAM = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-opus-4-6",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
ANTHROPIC_TOOL_EVENTS = {
    "content_block_start": {
        "type": "content_block_start",
        "index": 1,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {},
        },
    },
    "content_block_delta": {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"location":'},
    },
    "message_delta": {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
}


def ndjson(daemon: DaemonProcess, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream(
        "POST", daemon.url + path, headers=daemon.headers(), json=body, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in response.iter_lines() if line]


def sse(daemon: DaemonProcess, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    headers = {"x-api-key": daemon.admin_key, "anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST", daemon.url + "/v1/messages", headers=headers, json=body, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        events.append((name[len("event: ") :], json.loads(data[len("data: ") :])))
    return events


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("shapes-daemon")
    running = DaemonProcess(home)
    model = templated_starter(home, "qwen-tools", "qwen2.5-instruct.jinja")
    assert running.cli("models", "import", str(model)).returncode == 0
    with running:
        running.wait_until_model("ready")
        yield running


def test_ollama_chat_stream(daemon: DaemonProcess) -> None:
    lines = ndjson(
        daemon,
        "/api/chat",
        {
            "model": STARTER_MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "options": {"num_predict": 4},
        },
    )
    assert len(lines) >= 2
    for line in lines[:-1]:
        assert_shape(line, OLLAMA_CHAT_CHUNK)
    assert_shape(lines[-1], OLLAMA_CHAT_FINAL)


def test_ollama_generate_stream(daemon: DaemonProcess) -> None:
    lines = ndjson(
        daemon,
        "/api/generate",
        {"model": STARTER_MODEL, "prompt": "Hi", "options": {"num_predict": 4}},
    )
    for line in lines[:-1]:
        assert_shape(line, OLLAMA_GENERATE_CHUNK)
    assert_shape(lines[-1], OLLAMA_GENERATE_FINAL)


def test_ollama_tool_reply(daemon: DaemonProcess) -> None:
    response = httpx.post(
        daemon.url + "/api/chat",
        headers=daemon.headers(),
        json={
            "model": "qwen-tools",
            "stream": False,
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                    ],
                },
                {"role": "user", "content": "Weather in London?"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ],
            "options": {"temperature": 0, "num_predict": 60},
        },
        timeout=60,
    )
    assert response.status_code == 200
    assert_shape(response.json(), OLLAMA_TOOL_REPLY)


def test_anthropic_text_stream(daemon: DaemonProcess) -> None:
    events = sse(
        daemon,
        {
            "model": STARTER_MODEL,
            "max_tokens": 6,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    )
    documented = dict(ANTHROPIC_TEXT_STREAM)
    assert [name for name, _ in events[:3]] == [name for name, _ in ANTHROPIC_TEXT_STREAM[:3]]
    assert [name for name, _ in events[-3:]] == [name for name, _ in ANTHROPIC_TEXT_STREAM[-3:]]
    for name, data in events:
        assert data["type"] == name
        assert_shape(data, documented[name])


def test_anthropic_tool_stream(daemon: DaemonProcess) -> None:
    events = sse(
        daemon,
        {
            "model": "qwen-tools",
            "max_tokens": 60,
            "stream": True,
            "tools": [
                {
                    "name": "get_weather",
                    "input_schema": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        # Required, so the forced call's grammar always writes it: the answer
                        # is sampled (temperature 1), and {} would be valid otherwise.
                        "required": ["location"],
                    },
                }
            ],
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
        },
    )
    tool_events = [(n, d) for n, d in events if n in ANTHROPIC_TOOL_EVENTS]
    assert {name for name, _ in tool_events} == set(ANTHROPIC_TOOL_EVENTS)
    for name, data in tool_events:
        assert_shape(data, ANTHROPIC_TOOL_EVENTS[name])
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert isinstance(json.loads(partial)["location"], str)
