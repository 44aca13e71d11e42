"""The pure protocol translators (``localserve/protocols/``), without a server or a model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from localserve.api.errors import APIError
from localserve.api.requests import validate
from localserve.errors import BackendUnavailableError
from localserve.protocols.anthropic import (
    AnthropicReply,
    MessagesRequest,
    message_events,
    openai_request,
)
from localserve.protocols.anthropic import error_object as anthropic_error_object
from localserve.protocols.ollama import (
    EmbedReply,
    OllamaReply,
    Timing,
    chat_call,
    done_fields,
    embed_call,
    generate_call,
    loads_only,
    model_name,
    ollama_tool_calls,
    openai_chat_messages,
    sampling,
    unloads_now,
)
from localserve.protocols.ollama import error_object as ollama_error_object
from localserve.protocols.openai import StreamedToolCalls, call_arguments
from localserve.protocols.openai import error_object as openai_error_object


def test_ollama_options_become_openai_fields() -> None:
    payload = {
        "options": {"temperature": 0.2, "num_predict": 64, "top_k": 5, "num_ctx": 8192},
        "format": {"type": "object"},
    }
    assert sampling(payload) == {
        "temperature": 0.2,
        "top_k": 5,
        "max_tokens": 64,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "format", "schema": {"type": "object"}},
        },
    }
    assert sampling({"format": "json"}) == {"response_format": {"type": "json_object"}}
    with pytest.raises(APIError, match="options must be an object"):
        sampling({"options": [1]})


def test_model_names_lose_latest_and_must_be_given() -> None:
    assert model_name({"model": " qwen:latest "}) == "qwen"
    assert model_name({"name": "tiny"}) == "tiny"
    with pytest.raises(APIError, match="model is required"):
        model_name({"model": ""})


def test_tool_results_without_ids_find_their_call() -> None:
    messages = openai_chat_messages(
        [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "time", "arguments": {"city": "Rome"}}},
                ],
            },
            {"role": "tool", "tool_name": "time", "content": "12:00"},
            {"role": "tool", "content": "sunny"},
        ]
    )
    calls = messages[1]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert all(c["id"].startswith("call_") for c in calls)
    assert messages[2]["tool_call_id"] == calls[1]["id"]  # matched by name
    assert messages[3]["tool_call_id"] == calls[0]["id"]  # the one left
    with pytest.raises(APIError, match="images are not supported"):
        openai_chat_messages([{"role": "user", "content": "?", "images": ["aGk="]}])


def test_openai_tool_calls_become_ollamas_with_object_arguments() -> None:
    openai_calls = [
        {"id": "call_1", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "function": {"name": "broken", "arguments": "{not json"}},
    ]
    assert ollama_tool_calls(openai_calls) == [
        {
            "id": "call_1",
            "function": {"index": 0, "name": "weather", "arguments": {"city": "Paris"}},
        },
        {"id": "call_2", "function": {"index": 1, "name": "broken", "arguments": {}}},
    ]


def test_the_last_line_says_why_it_ended() -> None:
    timing = Timing()
    timing.mark_first()
    usage = {"prompt_tokens": 7, "completion_tokens": 3}
    ended = done_fields("tool_calls", timing, usage)
    assert ended["done"] is True and ended["done_reason"] == "stop"
    assert ended["prompt_eval_count"] == 7 and ended["eval_count"] == 3
    assert ended["total_duration"] >= ended["eval_duration"] >= 0
    assert done_fields("length", timing, None)["done_reason"] == "length"


@pytest.mark.parametrize(
    ("value", "unloads"), [(0, True), ("0s", True), ("0m", True), ("5m", False), (None, False)]
)
def test_keep_alive_zero_in_any_spelling_unloads(value: object, unloads: bool) -> None:
    assert unloads_now({"keep_alive": value}) is unloads


def test_stream_deltas_put_tool_calls_together() -> None:
    calls = StreamedToolCalls()
    calls.add({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "wea"}}]})
    calls.add({"tool_calls": [{"index": 0, "function": {"name": "ther", "arguments": '{"ci'}}]})
    calls.add({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "time"}}]})
    calls.add({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]})
    assembled = calls.calls()
    assert [c["id"] for c in assembled] == ["call_a", "call_b"]
    assert assembled[0]["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert call_arguments(assembled[0]["function"]["arguments"]) == {"city": "Paris"}
    assert call_arguments(json.dumps([1, 2])) == {} and call_arguments("") == {}


def test_an_anthropic_request_becomes_an_openai_chat_request() -> None:
    body = validate(
        MessagesRequest,
        {
            "model": "tiny",
            "max_tokens": 32,
            "system": "Be brief.",
            "stream": True,
            "stop_sequences": ["END"],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"c": 1}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sun"}
                    ],
                },
            ],
        },
    )
    request = openai_request(body)
    assert request["stream_options"] == {"include_usage": True} and request["stop"] == ["END"]
    assert [m["role"] for m in request["messages"]] == ["system", "user", "assistant", "tool"]
    assert request["messages"][2]["tool_calls"][0]["id"] == "toolu_1"
    assert request["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sun"}


def test_openai_chunks_become_anthropics_event_sequence() -> None:
    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"content": "Hel"}}]}
        yield {"choices": [{"delta": {"content": "lo"}, "finish_reason": "length"}]}
        yield {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}

    async def collect() -> list[bytes]:
        return [event async for event in message_events("tiny", chunks())]

    events = asyncio.run(collect())
    names = [event.split(b"\n", 1)[0].decode().removeprefix("event: ") for event in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = json.loads(events[-2].split(b"data: ", 1)[1])
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"] == {"input_tokens": 4, "output_tokens": 2}


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [item async for item in stream]


def test_ollama_chat_becomes_a_streamed_openai_call_with_usage() -> None:
    call = chat_call({"model": "tiny:latest", "messages": [{"role": "user", "content": "hi"}]})
    assert call.path == "/v1/chat/completions"
    assert call.stream is True
    assert call.payload["model"] == "tiny"
    assert call.payload["stream_options"] == {"include_usage": True}
    assert call.after is None
    with pytest.raises(APIError, match="messages must be a non-empty list"):
        chat_call({"model": "tiny", "messages": []})


def test_ollama_generate_picks_completion_for_raw_and_suffix_and_unloads_on_keep_alive_0() -> None:
    async def unload() -> None:
        pass

    raw = generate_call({"model": "m", "prompt": "def f(", "suffix": "):", "stream": False}, unload)
    assert (raw.path, raw.stream, raw.payload["suffix"]) == ("/v1/completions", False, "):")
    assert raw.after is None  # keep_alive not 0: the model stays
    chat = generate_call(
        {"model": "m", "prompt": "hi", "system": "be brief", "keep_alive": 0}, unload
    )
    assert chat.path == "/v1/chat/completions"
    assert [m["role"] for m in chat.payload["messages"]] == ["system", "user"]
    assert chat.after is unload
    assert loads_only({"model": "m"}) and not loads_only({"model": "m", "prompt": "x"})
    with pytest.raises(APIError, match="prompt must be a string"):
        generate_call({"model": "m", "prompt": ["x"]})


def test_ollama_embed_never_streams() -> None:
    call = embed_call({"model": "m", "input": ["a", "b"]})
    assert (call.path, call.stream, call.payload["input"]) == ("/v1/embeddings", False, ["a", "b"])
    reply = EmbedReply("m").whole(
        {"data": [{"embedding": [0.5]}, {"embedding": [0.25]}], "usage": {"prompt_tokens": 3}}
    )
    assert reply["embeddings"] == [[0.5], [0.25]]
    assert reply["prompt_eval_count"] == 3
    with pytest.raises(APIError, match="input must be"):
        embed_call({"model": "m", "input": 5})


def test_openai_stream_becomes_ollama_lines_with_tool_calls_before_the_last() -> None:
    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"content": "Hi"}}]}
        call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}}
        yield {"choices": [{"delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}
        yield {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}

    lines = [
        json.loads(line) for line in asyncio.run(collect(OllamaReply("m", "chat").stream(chunks())))
    ]
    assert [line["done"] for line in lines] == [False, False, True]
    assert lines[0]["message"] == {"role": "assistant", "content": "Hi"}
    assert lines[1]["message"]["tool_calls"][0]["function"] == {
        "index": 0,
        "name": "f",
        "arguments": {"a": 1},
    }
    assert lines[2]["done_reason"] == "stop"
    assert (lines[2]["prompt_eval_count"], lines[2]["eval_count"]) == (4, 2)


def test_an_error_midway_ends_each_protocols_stream_in_its_own_shape() -> None:
    async def failing() -> AsyncIterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"content": "Hi"}}]}
        raise BackendUnavailableError("the runner died")

    ollama = asyncio.run(collect(OllamaReply("m", "generate").stream(failing())))
    assert json.loads(ollama[-1]) == {"error": "the runner died"}
    anthropic = asyncio.run(collect(AnthropicReply("m").stream(failing())))
    assert anthropic[-1].startswith(b"event: error\n")
    error = json.loads(anthropic[-1].split(b"data: ", 1)[1])
    assert error == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "the runner died"},
    }


def test_whole_answers_in_each_protocols_shape() -> None:
    reply = {
        "choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    generated = OllamaReply("m", "generate").whole(reply)
    assert (generated["response"], generated["done"], generated["context"]) == ("Paris.", True, [])
    message = AnthropicReply("m").whole(reply)
    assert message["content"] == [{"type": "text", "text": "Paris."}]
    assert message["usage"] == {"input_tokens": 5, "output_tokens": 2}


def test_each_protocol_shapes_its_errors() -> None:
    err = APIError(404, "no such model", code="model_not_found")
    assert openai_error_object(err)["error"]["code"] == "model_not_found"
    assert anthropic_error_object(err) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }
    assert ollama_error_object(err) == {"error": "no such model"}
