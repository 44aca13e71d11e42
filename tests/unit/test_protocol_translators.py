"""The pure protocol translators (``localserve/protocols/``), without a server or a model."""

from __future__ import annotations

import asyncio
import base64
import hashlib
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
    ThinkingConfig,
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
    shows_thinking,
    think_fields,
    unloads_now,
)
from localserve.protocols.ollama import error_object as ollama_error_object
from localserve.protocols.openai import StreamedToolCalls, call_arguments
from localserve.protocols.openai import error_object as openai_error_object
from localserve.protocols.responses import ResponsesReply, ResponsesRequest
from tests.helpers.shapes import assert_shape


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
    with pytest.raises(APIError, match="is not a PNG, JPEG, WebP or GIF image"):  # "hi"
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


# -- thinking models -----------------------------------------------------------------------------
THOUGHT = ["Let me ", "think."]


async def thinking_chunks() -> AsyncIterator[dict[str, Any]]:
    """A thinking model's OpenAI stream: thoughts first, then the answer, then usage."""
    yield {"choices": [{"delta": {"role": "assistant", "content": ""}}]}
    for piece in THOUGHT:
        yield {"choices": [{"delta": {"reasoning_content": piece}}]}
    yield {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]}
    usage = {"prompt_tokens": 4, "completion_tokens": 5}
    yield {"choices": [], "usage": {**usage, "completion_tokens_details": {"reasoning_tokens": 4}}}


THINKING_REPLY = {
    "choices": [
        {
            "message": {"content": "Paris.", "reasoning_content": "".join(THOUGHT)},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 6},
}


def anthropic_body(**fields: Any) -> MessagesRequest:
    messages = [{"role": "user", "content": "Hi"}]
    return validate(
        MessagesRequest, {"model": "m", "max_tokens": 64, "messages": messages, **fields}
    )


def named_events(events: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    named = []
    for event in events:
        name, data = event.decode().strip().split("\n")
        named.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return named


@pytest.mark.parametrize(
    ("thinking", "fields"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, {"thinking_budget_tokens": 1024}),
        ({"type": "adaptive"}, {}),
        ({"type": "disabled"}, {"enable_thinking": False}),
        (None, {"enable_thinking": False}),  # Anthropic's default: no thinking
    ],
)
def test_anthropic_thinking_becomes_openai_reasoning_fields(
    thinking: dict[str, Any] | None, fields: dict[str, Any]
) -> None:
    request = openai_request(anthropic_body(**({"thinking": thinking} if thinking else {})))
    asked = {
        key: request[key]
        for key in ("reasoning_effort", "thinking_budget_tokens", "enable_thinking")
        if key in request
    }
    assert asked == fields


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "enabled"},  # no budget
        {"type": "enabled", "budget_tokens": 0},
        {"type": "sometimes"},
        {"type": "adaptive", "display": "loud"},
        "enabled",
        True,
    ],
)
def test_a_bad_thinking_is_refused(thinking: Any) -> None:
    with pytest.raises(APIError) as refused:
        anthropic_body(thinking=thinking)
    assert refused.value.status_code == 400
    assert refused.value.param is not None and refused.value.param.startswith("thinking")


def test_earlier_thinking_blocks_become_the_assistant_turns_reasoning_content() -> None:
    turn = [
        {"type": "thinking", "thinking": "They want the weather.", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": "EmwKAhgB..."},  # Claude's, encrypted: skipped
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
    ]
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": turn},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
    ]
    sent = openai_request(anthropic_body(messages=messages))["messages"]
    assert sent[1]["reasoning_content"] == "They want the weather."
    assert sent[1]["content"] == "Let me look." and sent[1]["tool_calls"][0]["id"] == "toolu_1"
    assert "reasoning_content" not in sent[0] and "reasoning_content" not in sent[2]
    broken = [{"role": "assistant", "content": [{"type": "thinking", "signature": "x"}]}]
    with pytest.raises(APIError, match="thinking"):
        openai_request(anthropic_body(messages=[*messages[:1], *broken]))


def test_a_whole_anthropic_answer_starts_with_a_signed_thinking_block() -> None:
    enabled = ThinkingConfig(type="enabled", budget_tokens=1024)
    blocks = AnthropicReply("m", enabled).whole(THINKING_REPLY)["content"]
    thought = "".join(THOUGHT)
    digest = base64.b64encode(hashlib.sha256(thought.encode()).digest()).decode()
    assert blocks == [
        {"type": "thinking", "thinking": thought, "signature": digest},
        {"type": "text", "text": "Paris."},
    ]
    assert_shape({"content": blocks}, ANTHROPIC_THINKING_MESSAGE)
    # Thinking not asked for: the thoughts a model wrote anyway are dropped.
    for thinking in (None, ThinkingConfig(type="disabled")):
        plain = AnthropicReply("m", thinking).whole(THINKING_REPLY)["content"]
        assert plain == [{"type": "text", "text": "Paris."}]
    omitted = ThinkingConfig(type="adaptive", display="omitted")
    hidden = AnthropicReply("m", omitted).whole(THINKING_REPLY)["content"][0]
    assert hidden == {"type": "thinking", "thinking": "", "signature": digest}


# Anthropic's extended thinking guide, "Streaming thinking" (pings are not shown there).
ANTHROPIC_THINKING_STREAM: list[tuple[str, dict[str, Any]]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01...",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-5",
                "stop_reason": None,
                "stop_sequence": None,
            },
        },
    ),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "I need to find the GCD of 1071"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "\n1071 = 2 * 462 + 147"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h..."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": "The greatest common divisor is 21."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}},
    ),
    ("message_stop", {"type": "message_stop"}),
]
# The same guide's whole answer with thinking.
ANTHROPIC_THINKING_MESSAGE = {
    "content": [
        {
            "type": "thinking",
            "thinking": "Let me analyze this step by step...",
            "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG...",
        },
        {"type": "text", "text": "Based on my analysis..."},
    ]
}


def test_a_thinking_block_streams_as_anthropic_documents() -> None:
    enabled = ThinkingConfig(type="enabled", budget_tokens=1024)
    events = named_events(
        asyncio.run(collect(AnthropicReply("m", enabled).stream(thinking_chunks())))
    )
    unpinged = [(name, data) for name, data in events if name != "ping"]
    assert [name for name, _ in unpinged] == [name for name, _ in ANTHROPIC_THINKING_STREAM]
    for (_, ours), (_, documented) in zip(unpinged, ANTHROPIC_THINKING_STREAM, strict=True):
        assert ours["type"] == documented["type"]
        if "delta" in documented and "type" in documented["delta"]:
            assert ours["delta"]["type"] == documented["delta"]["type"]
        assert_shape(ours, documented)
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == "".join(THOUGHT)
    signed = next(d["signature"] for d in deltas if d["type"] == "signature_delta")
    thought = "".join(THOUGHT).encode()
    assert signed == base64.b64encode(hashlib.sha256(thought).digest()).decode()


def test_without_thinking_the_anthropic_stream_has_no_thinking_block() -> None:
    events = named_events(asyncio.run(collect(AnthropicReply("m").stream(thinking_chunks()))))
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts == [{"type": "text", "text": ""}]
    assert all("thinking" not in json.dumps(data) for _, data in events)


def test_a_stream_of_only_thoughts_still_has_a_text_block() -> None:
    async def thoughts_only() -> AsyncIterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"reasoning_content": "Hmm."}, "finish_reason": "length"}]}

    adaptive = ThinkingConfig(type="adaptive")
    events = named_events(
        asyncio.run(collect(AnthropicReply("m", adaptive).stream(thoughts_only())))
    )
    starts = [
        data["content_block"]["type"] for name, data in events if name == "content_block_start"
    ]
    assert starts == ["thinking", "text"]
    assert [name for name, _ in events].count("content_block_stop") == 2


@pytest.mark.parametrize(
    ("think", "fields"),
    [
        (True, {}),
        (None, {}),
        (False, {"enable_thinking": False}),
        ("low", {"reasoning_effort": "low"}),
        ("high", {"reasoning_effort": "high"}),
    ],
)
def test_ollama_think_becomes_thinking_fields(think: Any, fields: dict[str, Any]) -> None:
    payload: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if think is not None:
        payload["think"] = think
    assert think_fields(payload) == fields
    chat = chat_call(payload).payload
    generated = generate_call({"model": "m", "prompt": "hi", "think": think}).payload
    for sent in (chat, generated):
        thinking = ("reasoning_effort", "enable_thinking")
        assert {k: sent[k] for k in thinking if k in sent} == fields
    assert shows_thinking(payload) is (think is not False)


@pytest.mark.parametrize("think", ["max", "", "True", 3, 1, 0, [], {"level": "low"}])
def test_a_bad_ollama_think_is_refused(think: Any) -> None:
    chat = {"model": "m", "messages": [{"role": "user"}], "think": think}
    with pytest.raises(APIError, match="think must be") as refused:
        chat_call(chat)
    assert refused.value.status_code == 400
    with pytest.raises(APIError, match="think must be"):  # a raw prompt's think is checked too
        generate_call({"model": "m", "prompt": "x", "raw": True, "think": think})


def test_ollama_raw_prompts_send_no_reasoning_fields() -> None:
    raw = generate_call({"model": "m", "prompt": "def f(", "raw": True, "think": False})
    assert raw.path == "/v1/completions" and "reasoning_effort" not in raw.payload


def test_ollama_thinking_of_earlier_turns_becomes_reasoning_content() -> None:
    messages = openai_chat_messages(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!", "thinking": "A greeting."},
            {"role": "user", "content": "bye", "thinking": "ignored: users do not think here"},
        ]
    )
    assert messages[1]["reasoning_content"] == "A greeting."
    assert "reasoning_content" not in messages[0] and "reasoning_content" not in messages[2]
    with pytest.raises(APIError, match="thinking must be a string"):
        openai_chat_messages([{"role": "assistant", "content": "", "thinking": ["x"]}])


# Ollama's thinking guide (docs.ollama.com/capabilities/thinking) and API reference: the thought
# streams in message.thinking (chat) or thinking (generate), with the content empty meanwhile.
OLLAMA_CHAT_THINKING_LINE = {
    "model": "qwen3",
    "created_at": "2025-05-29T09:35:56.836222Z",
    "message": {"role": "assistant", "content": "", "thinking": "Okay"},
    "done": False,
}
OLLAMA_GENERATE_THINKING_LINE = {
    "model": "qwen3",
    "created_at": "2025-05-29T09:35:56.836222Z",
    "response": "",
    "thinking": "Okay",
    "done": False,
}
OLLAMA_CHAT_THINKING_REPLY = {
    "model": "qwen3",
    "created_at": "2025-05-29T09:35:56.836222Z",
    "message": {
        "role": "assistant",
        "content": "There are 3 r's in strawberry.",
        "thinking": "Let me count the letters.",
    },
    "done_reason": "stop",
    "done": True,
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}


def test_ollama_streams_thoughts_in_lines_of_their_own() -> None:
    for endpoint, documented in [
        ("chat", OLLAMA_CHAT_THINKING_LINE),
        ("generate", OLLAMA_GENERATE_THINKING_LINE),
    ]:
        reply = OllamaReply("m", endpoint)  # type: ignore[arg-type]
        lines = [json.loads(line) for line in asyncio.run(collect(reply.stream(thinking_chunks())))]
        thinking, rest = lines[: len(THOUGHT)], lines[len(THOUGHT) :]
        for line, piece in zip(thinking, THOUGHT, strict=True):
            assert_shape(line, documented)
            shown = line["message"] if endpoint == "chat" else line
            assert shown["thinking"] == piece
            assert shown["content" if endpoint == "chat" else "response"] == ""
        assert all("thinking" not in json.dumps(line) for line in rest)
        assert rest[-1]["done"] is True


def test_ollama_think_false_drops_the_thoughts() -> None:
    reply = OllamaReply("m", "chat", thinking=False)
    lines = [json.loads(line) for line in asyncio.run(collect(reply.stream(thinking_chunks())))]
    assert [line["message"]["content"] for line in lines] == ["Hi", ""]
    assert "thinking" not in reply.whole(THINKING_REPLY)["message"]


def test_whole_ollama_answers_carry_their_thoughts() -> None:
    chat = OllamaReply("m", "chat").whole(THINKING_REPLY)
    assert chat["message"]["thinking"] == "".join(THOUGHT)
    assert_shape(chat, OLLAMA_CHAT_THINKING_REPLY)
    generated = OllamaReply("m", "generate").whole(THINKING_REPLY)
    assert (generated["thinking"], generated["response"]) == ("".join(THOUGHT), "Paris.")


# -- a tool call after the thought -------------------------------------------------------------
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}


async def thought_then_call() -> AsyncIterator[dict[str, Any]]:
    """A thinking model that calls a tool: thoughts, then the call, as the runner streams it."""
    for piece in THOUGHT:
        yield {"choices": [{"delta": {"reasoning_content": piece}}]}
    arguments = {**CALL, "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    yield {"choices": [{"delta": {"tool_calls": [{"index": 0, **arguments}]}}]}
    yield {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}


def test_a_tool_call_after_a_thought_in_anthropics_stream() -> None:
    enabled = ThinkingConfig(type="enabled", budget_tokens=1024)
    events = named_events(
        asyncio.run(collect(AnthropicReply("m", enabled).stream(thought_then_call())))
    )
    starts = [
        data["content_block"]["type"] for name, data in events if name == "content_block_start"
    ]
    assert starts == ["thinking", "tool_use"]
    stop = next(data for name, data in events if name == "message_delta")
    assert stop["delta"]["stop_reason"] == "tool_use"
    arguments = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    ]
    assert json.loads("".join(arguments)) == {"city": "Paris"}


def test_a_tool_call_after_a_thought_in_ollamas_lines() -> None:
    lines = [
        json.loads(line)
        for line in asyncio.run(collect(OllamaReply("m", "chat").stream(thought_then_call())))
    ]
    thought = "".join(line["message"].get("thinking", "") for line in lines)
    calls = [call for line in lines for call in line["message"].get("tool_calls", [])]
    assert thought == "".join(THOUGHT)
    assert [call["function"]["arguments"] for call in calls] == [{"city": "Paris"}]
    assert lines[-1]["done"] is True


def test_a_tool_call_after_a_thought_in_the_responses_stream() -> None:
    body = validate(ResponsesRequest, {"model": "m", "input": "Weather in Paris?"})
    events = named_events(asyncio.run(collect(ResponsesReply(body).stream(thought_then_call()))))
    final = events[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "".join(THOUGHT)
    assert json.loads(final["output"][1]["arguments"]) == {"city": "Paris"}
    added = [data["output_index"] for name, data in events if name == "response.output_item.added"]
    assert added == [0, 1]
