"""Each protocol's inference endpoints, through the whole gateway in-process (``create_app``
over the fake backend of ``tests/helpers/fake_backend.py``): the reply each builds from the
same known OpenAI answer, whole and streamed; the backend header; keys; a backend lost midway.
Milliseconds a test; the real-model versions of these live in ``tests/integration``."""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import ollama
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import TextBlock, ThinkingBlock, ThinkingConfigParam

from tests.helpers.fake_backend import (
    CONTENT,
    EMBEDDING,
    LOST,
    MODEL,
    PROMPT_TOKENS_COUNTED,
    REASONING,
    TOOL_CALL,
    USAGE,
    FakeBackend,
)
from tests.helpers.gateway import Gateway, build_gateway, ndjson_lines, sse_events

TEXT = "".join(CONTENT)
ARGUMENTS = json.loads("".join(TOOL_CALL["arguments"]))
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
HELLO = [{"role": "user", "content": "Hello?"}]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return build_gateway(tmp_path / "gateway")


def gateway_with(tmp_path: Path, **fake: Any) -> Gateway:
    return build_gateway(tmp_path / "gateway", FakeBackend(**fake))


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": HELLO, **extra}


def anthropic(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 32, "messages": HELLO, **extra}


def assert_openai_error(body: Any, code: str | None = None) -> None:
    error = body["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    if code is not None:
        assert error["code"] == code


def assert_anthropic_error(body: Any, kind: str | None = None) -> None:
    assert body["type"] == "error"
    assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["type"], str)
    if kind is not None:
        assert body["error"]["type"] == kind


def assert_ollama_error(body: Any) -> None:
    assert list(body) == ["error"] and isinstance(body["error"], str)


# -- OpenAI: the backend's bytes, relayed as they are ------------------------------------------
def test_openai_chat_is_the_backends_answer_with_its_header(gateway: Gateway) -> None:
    response = gateway.post("/v1/chat/completions", chat())
    assert response.status_code == 200
    assert response.headers["x-localserve-backend"] == "local"
    reply = response.json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": TEXT}
    assert reply["choices"][0]["finish_reason"] == "stop" and reply["usage"] == USAGE
    assert gateway.backend.sent[0].path == "/v1/chat/completions"


def test_openai_chat_streams_content_tool_calls_and_usage(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, tool_call=True)
    body = chat(stream=True, stream_options={"include_usage": True}, tools=[WEATHER_TOOL])
    response = gateway.post("/v1/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-localserve-backend"] == "local"
    events = [data for _, data in sse_events(response.content)]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    deltas = [choice["delta"] for chunk in chunks for choice in chunk["choices"]]
    assert "".join(delta.get("content") or "" for delta in deltas) == TEXT
    calls = [call for delta in deltas for call in delta.get("tool_calls") or []]
    assert calls[0]["id"] == TOOL_CALL["id"] and calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(call["function"].get("arguments") or "" for call in calls)
    assert json.loads(arguments) == ARGUMENTS
    finishes = [choice["finish_reason"] for chunk in chunks for choice in chunk["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE


def test_openai_completions_and_embeddings(gateway: Gateway) -> None:
    whole = gateway.post("/v1/completions", {"model": MODEL, "prompt": "def f():"})
    assert whole.status_code == 200 and whole.json()["choices"][0]["text"] == TEXT
    streamed = gateway.post("/v1/completions", {"model": MODEL, "prompt": "x", "stream": True})
    pieces = [data for _, data in sse_events(streamed.content)]
    assert "".join(chunk["choices"][0]["text"] for chunk in pieces[:-1]) == TEXT
    embedded = gateway.post("/v1/embeddings", {"model": MODEL, "input": ["a", "b"]})
    assert [item["embedding"] for item in embedded.json()["data"]] == [EMBEDDING, EMBEDDING]
    assert embedded.headers["x-localserve-backend"] == "local"


def test_openai_stream_that_loses_its_backend_ends_with_an_error_event(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, fail_after=2)
    response = gateway.post("/v1/chat/completions", chat(stream=True))
    assert response.status_code == 200  # the stream had started
    events = [data for _, data in sse_events(response.content)]
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["message"] == LOST
    assert_openai_error(events[-2], "backend_unavailable")
    assert gateway.backend.opened[0].closed


def test_openai_backend_lost_before_the_first_event_is_a_503(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, fail_after=0)
    response = gateway.post("/v1/chat/completions", chat(stream=True))
    assert response.status_code == 503
    assert_openai_error(response.json(), "backend_unavailable")


def test_openai_refusals_are_openai_errors(gateway: Gateway) -> None:
    missing = gateway.post("/v1/chat/completions", {"model": MODEL})
    assert missing.status_code == 400
    assert_openai_error(missing.json())
    assert missing.json()["error"]["param"] == "messages"
    unknown = gateway.post("/v1/chat/completions", {**chat(), "model": "nope"})
    assert unknown.status_code == 404
    assert_openai_error(unknown.json(), "model_not_found")
    assert gateway.backend.sent == []


# -- Anthropic: the same answer as a message, or its event stream --------------------------------
def test_anthropic_message_from_the_backends_answer(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, tool_call=True)
    response = gateway.post("/v1/messages", anthropic(tools=[ANTHROPIC_TOOL]))
    assert response.status_code == 200
    assert response.headers["x-localserve-backend"] == "local"
    message = response.json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == MODEL and message["id"].startswith("msg_")
    text, use = message["content"]
    assert text == {"type": "text", "text": TEXT}
    assert use == {"type": "tool_use", "id": TOOL_CALL["id"], "name": "get_weather"} | {
        "input": ARGUMENTS
    }
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 3}
    sent = gateway.backend.sent[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.payload["tools"][0]["function"]["name"] == "get_weather"
    assert sent.payload["max_tokens"] == 32 and sent.payload["messages"] == HELLO


def test_anthropic_stream_is_its_event_sequence(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, tool_call=True)
    response = gateway.post("/v1/messages", anthropic(stream=True, tools=[ANTHROPIC_TOOL]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-localserve-backend"] == "local"
    events = list(sse_events(response.content))
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == 2 == names.count("content_block_stop")
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert "".join(d["text"] for d in deltas if d["type"] == "text_delta") == TEXT
    partial = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(partial) == ARGUMENTS
    tool_block = [data for name, data in events if name == "content_block_start"][1]
    assert tool_block["content_block"]["id"] == TOOL_CALL["id"]
    assert tool_block["index"] == 1
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"
    assert final["usage"] == {"input_tokens": 7, "output_tokens": 3}
    sent = gateway.backend.sent[0].payload
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_anthropic_stream_that_loses_its_backend_ends_with_an_error_event(
    tmp_path: Path,
) -> None:
    gateway = gateway_with(tmp_path, fail_after=2)
    response = gateway.post("/v1/messages", anthropic(stream=True))
    assert response.status_code == 200
    name, error = list(sse_events(response.content))[-1]
    assert name == "error"
    assert_anthropic_error(error)
    assert error["error"]["message"] == LOST


def test_anthropic_count_tokens_asks_the_backend(gateway: Gateway) -> None:
    response = gateway.post("/v1/messages/count_tokens", {"model": MODEL, "messages": HELLO})
    assert response.status_code == 200
    assert response.json() == {"input_tokens": PROMPT_TOKENS_COUNTED}
    assert gateway.backend.sent[0].path == "/tokenize/chat"


def test_anthropic_refusals_are_anthropic_errors(gateway: Gateway) -> None:
    missing = gateway.post("/v1/messages", {"model": MODEL, "messages": HELLO})
    assert missing.status_code == 400
    assert_anthropic_error(missing.json(), "invalid_request_error")
    unknown = gateway.post("/v1/messages", anthropic(model="nope"))
    assert unknown.status_code == 404
    assert_anthropic_error(unknown.json(), "not_found_error")


# -- Ollama: NDJSON lines, or one object ---------------------------------------------------------
def test_ollama_chat_whole(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, tool_call=True)
    body = chat(stream=False, tools=[WEATHER_TOOL], options={"temperature": 0.1})
    response = gateway.post("/api/chat", body)
    assert response.status_code == 200
    assert response.headers["x-localserve-backend"] == "local"
    reply = response.json()
    assert reply["model"] == MODEL and reply["done"] is True and reply["done_reason"] == "stop"
    assert reply["message"]["role"] == "assistant" and reply["message"]["content"] == TEXT
    (call,) = reply["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"] == ARGUMENTS
    assert reply["prompt_eval_count"] == 7 and reply["eval_count"] == 3
    sent = gateway.backend.sent[0].payload
    assert sent["temperature"] == 0.1 and sent["stream"] is False


def test_ollama_chat_streams_lines_then_calls_then_done(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, tool_call=True)
    response = gateway.post("/api/chat", chat(tools=[WEATHER_TOOL]))  # streams by default
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["x-localserve-backend"] == "local"
    lines = ndjson_lines(response.content)
    pieces, calls_line, last = lines[:-2], lines[-2], lines[-1]
    assert [line["message"]["content"] for line in pieces] == CONTENT
    assert not any(line["done"] for line in pieces[:-1])
    assert calls_line["message"]["tool_calls"][0]["function"]["arguments"] == ARGUMENTS
    assert last["done"] is True and last["message"]["content"] == ""
    assert last["prompt_eval_count"] == 7 and last["eval_count"] == 3
    assert gateway.backend.sent[0].payload["stream_options"] == {"include_usage": True}


def test_ollama_generate_whole_and_streamed(gateway: Gateway) -> None:
    whole = gateway.post(
        "/api/generate", {"model": MODEL, "prompt": "Hi", "system": "Be brief.", "stream": False}
    )
    assert whole.status_code == 200 and whole.headers["x-localserve-backend"] == "local"
    reply = whole.json()
    assert reply["response"] == TEXT and reply["done"] is True and reply["context"] == []
    assert [m["role"] for m in gateway.backend.sent[0].payload["messages"]] == ["system", "user"]
    streamed = gateway.post("/api/generate", {"model": f"{MODEL}:latest", "prompt": "x"})
    lines = ndjson_lines(streamed.content)
    assert [line["response"] for line in lines[:-1]] == CONTENT
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 3
    raw = gateway.post("/api/generate", {"model": MODEL, "prompt": "x", "raw": True})
    assert raw.status_code == 200
    assert gateway.backend.sent[-1].path == "/v1/completions"


def test_ollama_generate_without_a_prompt_loads_the_model(gateway: Gateway) -> None:
    response = gateway.post("/api/generate", {"model": MODEL})
    assert response.status_code == 200 and response.json()["done_reason"] == "load"
    assert gateway.catalog.loaded_names == {MODEL}
    unloaded = gateway.post("/api/generate", {"model": MODEL, "keep_alive": 0})
    assert unloaded.json()["done_reason"] == "unload" and gateway.catalog.loaded_names == set()
    assert gateway.backend.sent == []


def test_ollama_embed(gateway: Gateway) -> None:
    response = gateway.post("/api/embed", {"model": MODEL, "input": ["a", "b"]})
    assert response.status_code == 200
    assert response.headers["x-localserve-backend"] == "local"
    assert response.json()["embeddings"] == [EMBEDDING, EMBEDDING]
    assert response.json()["prompt_eval_count"] == 2


def test_ollama_stream_that_loses_its_backend_ends_with_an_error_line(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, fail_after=2)
    for path, body in [("/api/chat", chat()), ("/api/generate", {"model": MODEL, "prompt": "x"})]:
        response = gateway.post(path, body)
        assert response.status_code == 200
        lines = ndjson_lines(response.content)
        assert lines[-1] == {"error": LOST}
        assert not any(line.get("done") for line in lines)


def test_ollama_refusals_are_ollama_errors(gateway: Gateway) -> None:
    for path, body, status in [
        ("/api/chat", {"model": MODEL}, 400),
        ("/api/chat", chat(model="nope"), 404),
        ("/api/generate", {"prompt": "x"}, 400),
        ("/api/show", {"model": "nope"}, 404),
        ("/api/chat", chat(messages=[{"role": "robot", "content": "x"}], stream=False), 400),
    ]:
        response = gateway.post(path, body)
        assert response.status_code == status, (path, body)
        assert_ollama_error(response.json())


def test_ollama_pull_and_delete_need_the_admin_key(gateway: Gateway) -> None:
    for method, path in [("POST", "/api/pull"), ("DELETE", "/api/delete")]:
        refused = gateway.post(path, {"model": "a/b"}, method=method)
        assert refused.status_code == 403
        assert_ollama_error(refused.json())
    admin = gateway.auth(gateway.admin_key)
    pulled = gateway.post("/api/pull", {"model": "owner/repo:Q4_K_M"}, headers=admin)
    assert pulled.status_code == 404  # the fake Hub has nothing
    assert_ollama_error(pulled.json())


# -- keys, per protocol ------------------------------------------------------------------------
ENDPOINTS = [
    ("/v1/chat/completions", chat(), assert_openai_error),
    ("/v1/completions", {"model": MODEL, "prompt": "x"}, assert_openai_error),
    ("/v1/embeddings", {"model": MODEL, "input": "x"}, assert_openai_error),
    ("/v1/messages", anthropic(), assert_anthropic_error),
    ("/v1/messages/count_tokens", {"model": MODEL, "messages": HELLO}, assert_anthropic_error),
    ("/api/chat", chat(), assert_ollama_error),
    ("/api/generate", {"model": MODEL, "prompt": "x"}, assert_ollama_error),
    ("/api/embed", {"model": MODEL, "input": "x"}, assert_ollama_error),
    ("/api/show", {"model": MODEL}, assert_ollama_error),
    ("/v1/responses/input_tokens", {"model": MODEL, "input": "x"}, assert_openai_error),
]


@pytest.mark.parametrize(("path", "body", "assert_error"), ENDPOINTS)
def test_a_missing_or_wrong_key_is_a_401_in_the_protocols_shape(
    gateway: Gateway, path: str, body: dict[str, Any], assert_error: Any
) -> None:
    for headers in ({}, gateway.auth("sk-wrong"), {"x-api-key": "sk-wrong"}):
        response = gateway.post(path, body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert_error(response.json())
    if path.startswith("/v1/messages"):
        assert response.json()["error"]["type"] == "authentication_error"
    elif path.startswith("/v1/"):
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert gateway.backend.sent == []
    accepted = gateway.post(path, body, headers={"x-api-key": gateway.client_key})
    assert accepted.status_code == 200


# -- thinking models, through the official clients -------------------------------------------
THOUGHT = "".join(REASONING)
BUDGET: ThinkingConfigParam = {"type": "enabled", "budget_tokens": 1024}


def anthropic_sdk(gateway: Gateway) -> AsyncAnthropic:
    """The SDK over the gateway in-process. Recent SDKs are built on httpx2, older on httpx."""
    http: ModuleType = httpx
    with contextlib.suppress(ImportError):  # an older SDK: httpx
        http = importlib.import_module("httpx2")
    client = http.AsyncClient(transport=gateway.transport(http))
    return AsyncAnthropic(
        api_key=gateway.client_key, base_url="http://127.0.0.1", http_client=client, max_retries=0
    )


def test_anthropic_sdk_gets_a_thinking_block_then_text(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, reasoning=True)

    async def ask() -> Any:
        async with anthropic_sdk(gateway) as client:
            return await client.messages.create(
                model=MODEL,
                max_tokens=2048,
                thinking=BUDGET,
                messages=HELLO,  # type: ignore[arg-type]
            )

    message = gateway.run(ask)
    thinking, text = message.content
    assert isinstance(thinking, ThinkingBlock)
    assert thinking.thinking == THOUGHT and thinking.signature
    assert isinstance(text, TextBlock) and text.text == TEXT
    sent = gateway.backend.sent[-1].payload
    assert sent["thinking_budget_tokens"] == 1024 and "reasoning_effort" not in sent


def test_anthropic_sdk_streams_the_thinking_block_with_its_signature(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, reasoning=True)

    async def ask() -> tuple[list[Any], Any]:
        async with (
            anthropic_sdk(gateway) as client,
            client.messages.stream(
                model=MODEL,
                max_tokens=2048,
                thinking={"type": "adaptive"},
                messages=HELLO,  # type: ignore[arg-type]
            ) as stream,
        ):
            kinds = [event.type async for event in stream]
            return kinds, await stream.get_final_message()

    kinds, final = gateway.run(ask)
    assert kinds.index("thinking") < kinds.index("signature") < kinds.index("text")
    thinking, text = final.content
    assert isinstance(thinking, ThinkingBlock) and thinking.thinking == THOUGHT
    assert thinking.signature
    assert isinstance(text, TextBlock) and text.text == TEXT
    sent = gateway.backend.sent[-1].payload
    assert "thinking_budget_tokens" not in sent and "reasoning_effort" not in sent


def test_anthropic_without_thinking_asks_for_none_and_shows_none(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, reasoning=True)  # a model that thinks all the same
    for extra in ({}, {"thinking": {"type": "disabled"}}):
        whole = gateway.post("/v1/messages", anthropic(**extra)).json()
        assert whole["content"] == [{"type": "text", "text": TEXT}]
        assert gateway.backend.sent[-1].payload["enable_thinking"] is False
        streamed = gateway.post("/v1/messages", anthropic(stream=True, **extra))
        assert "thinking" not in streamed.text
    refused = gateway.post("/v1/messages", anthropic(thinking={"type": "enabled"}))
    assert refused.status_code == 400
    assert_anthropic_error(refused.json(), "invalid_request_error")


def test_anthropic_count_tokens_passes_thinking_on(gateway: Gateway) -> None:
    body = {"model": MODEL, "messages": HELLO, "thinking": BUDGET}
    assert gateway.post("/v1/messages/count_tokens", body).status_code == 200
    assert gateway.backend.sent[-1].payload["thinking_budget_tokens"] == 1024
    gateway.post("/v1/messages/count_tokens", {"model": MODEL, "messages": HELLO})
    assert gateway.backend.sent[-1].payload["enable_thinking"] is False


def ollama_client(gateway: Gateway) -> ollama.AsyncClient:
    return ollama.AsyncClient(
        host="http://127.0.0.1", headers=gateway.auth(), transport=gateway.transport()
    )


def test_ollama_client_gets_the_thinking_apart(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, reasoning=True)

    async def ask() -> tuple[Any, list[Any], Any]:
        client = ollama_client(gateway)
        whole = await client.chat(model=MODEL, messages=HELLO, think=True)
        parts = [
            part
            async for part in await client.chat(
                model=MODEL, messages=HELLO, think=True, stream=True
            )
        ]
        generated = await client.generate(model=MODEL, prompt="Hi", think="high")
        return whole, parts, generated

    whole, parts, generated = gateway.run(ask)
    assert (whole.message.thinking, whole.message.content) == (THOUGHT, TEXT)
    thinking = [part.message.thinking for part in parts if part.message.thinking]
    assert thinking == REASONING
    assert "".join(part.message.content or "" for part in parts) == TEXT
    first_text = next(i for i, part in enumerate(parts) if part.message.content)
    assert all(not part.message.thinking for part in parts[first_text:])
    assert (generated.thinking, generated.response) == (THOUGHT, TEXT)
    efforts = [sent.payload.get("reasoning_effort") for sent in gateway.backend.sent]
    assert efforts == [None, None, "high"]


def test_ollama_think_false_asks_for_none_and_shows_none(tmp_path: Path) -> None:
    gateway = gateway_with(tmp_path, reasoning=True)

    async def ask() -> tuple[Any, list[Any]]:
        client = ollama_client(gateway)
        whole = await client.chat(model=MODEL, messages=HELLO, think=False)
        parts = [
            part
            async for part in await client.generate(
                model=MODEL, prompt="Hi", think=False, stream=True
            )
        ]
        return whole, parts

    whole, parts = gateway.run(ask)
    assert whole.message.thinking is None and whole.message.content == TEXT
    assert all(part.thinking is None for part in parts)
    assert [sent.payload["enable_thinking"] for sent in gateway.backend.sent] == [False, False]
    # Without think, the thoughts still come apart (the model's default).
    raw = gateway.post("/api/chat", chat(stream=False)).json()
    assert raw["message"]["thinking"] == THOUGHT
    for think in ("max", 3):
        refused = gateway.post("/api/chat", chat(think=think))
        assert refused.status_code == 400
        assert_ollama_error(refused.json())
