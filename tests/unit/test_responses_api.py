"""The Responses API (``POST /v1/responses``) through the whole gateway in-process, read by the
real ``openai`` SDK (``client.responses.create`` and ``.stream``) over ``httpx.ASGITransport``;
the backend is the fake of ``tests/helpers/fake_backend.py``, so each answer is known."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from localserve.server.response_store import ResponseStore
from tests.helpers.fake_backend import (
    CONTENT,
    PROMPT_TOKENS_COUNTED,
    REASONING,
    TOOL_CALL,
    USAGE,
    FakeBackend,
)
from tests.helpers.gateway import Gateway, build_gateway, sse_events
from tests.helpers.shapes import assert_shape

T = TypeVar("T")
TEXT = "".join(CONTENT)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def with_sdk(gateway: Gateway, use: Callable[[openai.AsyncOpenAI], Awaitable[T]]) -> T:
    async def run() -> T:
        transport = httpx.ASGITransport(app=gateway.app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport) as http:
            client = openai.AsyncOpenAI(
                api_key=gateway.client_key, base_url="http://127.0.0.1/v1", http_client=http
            )
            return await asyncio.wait_for(use(client), 10)

    return asyncio.run(run())


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return build_gateway(tmp_path / "gateway")


def test_a_string_input_gets_a_message_and_usage(gateway: Gateway) -> None:
    async def ask(client: openai.AsyncOpenAI) -> Any:
        return await client.responses.create(
            model="tiny", input="Hello?", instructions="Be brief.", max_output_tokens=16
        )

    response = with_sdk(gateway, ask)
    assert response.status == "completed"
    assert response.output_text == TEXT
    assert response.id.startswith("resp_")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (
        USAGE["prompt_tokens"],
        USAGE["completion_tokens"],
    )
    sent = gateway.backend.sent[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.payload["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello?"},
    ]
    assert sent.payload["max_tokens"] == 16


def test_the_stream_follows_the_documented_event_sequence(gateway: Gateway) -> None:
    async def ask(client: openai.AsyncOpenAI) -> tuple[list[str], Any]:
        async with client.responses.stream(model="tiny", input="Hello?") as stream:
            kinds = [event.type async for event in stream]
            return kinds, await stream.get_final_response()

    kinds, final = with_sdk(gateway, ask)
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(CONTENT),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == TEXT
    assert final.usage is not None and final.usage.total_tokens == USAGE["total_tokens"]


def test_a_function_call_and_its_output_make_the_next_turn(tmp_path: Path) -> None:
    gateway = build_gateway(tmp_path / "gateway", FakeBackend(tool_call=True))

    async def ask(client: openai.AsyncOpenAI) -> Any:
        return await client.responses.create(
            model="tiny",
            input="Weather in Paris?",
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "name": "get_weather"},
        )

    response = with_sdk(gateway, ask)
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [
        (TOOL_CALL["name"], {"city": "Paris"})
    ]
    sent = gateway.backend.sent[-1].payload
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}

    async def follow_up(client: openai.AsyncOpenAI) -> Any:
        return await client.responses.create(
            model="tiny",
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "type": "function_call",
                    "call_id": calls[0].call_id,
                    "name": calls[0].name,
                    "arguments": calls[0].arguments,
                },
                {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
            ],
        )

    with_sdk(gateway, follow_up)
    messages = gateway.backend.sent[-1].payload["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "sunny"}


def test_streamed_function_calls_have_their_argument_events(tmp_path: Path) -> None:
    gateway = build_gateway(tmp_path / "gateway", FakeBackend(tool_call=True))
    body = {"model": "tiny", "input": "Weather?", "tools": [WEATHER], "stream": True}
    events = [data for _, data in sse_events(gateway.post("/v1/responses", body).content)]
    kinds = [event["type"] for event in events]
    assert kinds[-5:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    done = events[-3]
    assert json.loads(done["arguments"]) == {"city": "Paris"}


def test_what_is_not_served_yet_is_a_clear_openai_error(gateway: Gateway) -> None:
    for body, words in [
        ({"model": "tiny", "input": "x", "previous_response_id": "resp_1"}, "not found"),
        ({"model": "tiny", "input": [{"type": "web_search_call"}]}, "not supported"),
        ({"model": "tiny", "input": "x", "tools": [{"type": "web_search"}]}, "function tools"),
        ({"model": "tiny", "input": []}, "must not be empty"),
        ({"model": "tiny"}, "input"),
        ({"model": "nope", "input": "x"}, "does not exist"),
    ]:
        answer = gateway.post("/v1/responses", body)
        assert 400 <= answer.status_code < 500, (body, answer.text)
        error = answer.json()["error"]
        assert words in error["message"], (body, error)


def test_a_backend_lost_midway_ends_the_stream_with_an_error_event(tmp_path: Path) -> None:
    gateway = build_gateway(tmp_path / "gateway", FakeBackend(fail_after=2))
    body = {"model": "tiny", "input": "Hello?", "stream": True}
    events = [data for _, data in sse_events(gateway.post("/v1/responses", body).content)]
    assert events[-1]["type"] == "error"
    assert events[-1]["message"]


def test_a_follow_up_names_the_previous_response_and_sends_only_what_is_new(
    gateway: Gateway,
) -> None:
    async def converse(client: openai.AsyncOpenAI) -> tuple[Any, Any, Any]:
        first = await client.responses.create(
            model="tiny", input="My name is Ada.", instructions="Be brief."
        )
        second = await client.responses.create(
            model="tiny", input="What is my name?", previous_response_id=first.id
        )
        kept = await client.responses.retrieve(second.id)
        return first, second, kept

    first, second, kept = with_sdk(gateway, converse)
    assert second.previous_response_id == first.id and second.store is True
    assert kept.id == second.id and kept.output_text == TEXT
    # The earlier turns come from the store; instructions are not carried over (as OpenAI does).
    assert gateway.backend.sent[-1].payload["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": "What is my name?"},
    ]


def test_stored_responses_are_per_key_deletable_and_optional(gateway: Gateway) -> None:
    made = gateway.post("/v1/responses", {"model": "tiny", "input": "Hi"}).json()
    path = f"/v1/responses/{made['id']}"
    assert gateway.post(path, method="GET", content=b"").json()["id"] == made["id"]
    other = gateway.auth(gateway.admin_key)  # another key cannot read it, nor build on it
    assert gateway.post(path, method="GET", content=b"", headers=other).status_code == 404
    follow = {"model": "tiny", "input": "and?", "previous_response_id": made["id"]}
    assert gateway.post("/v1/responses", follow, headers=other).status_code == 400
    deleted = gateway.post(path, method="DELETE", content=b"").json()
    assert deleted == {"id": made["id"], "object": "response", "deleted": True}
    assert gateway.post(path, method="GET", content=b"").status_code == 404

    unstored = gateway.post("/v1/responses", {"model": "tiny", "input": "Hi", "store": False})
    assert unstored.json()["store"] is False
    lookup = f"/v1/responses/{unstored.json()['id']}"
    assert gateway.post(lookup, method="GET", content=b"").status_code == 404


def test_the_store_is_bounded_in_count_and_age() -> None:
    store = ResponseStore(max_count=2, max_age_s=60)
    for index in range(3):
        store.put("app", {"id": f"resp_{index}"}, [])
    assert store.get("app", "resp_0") is None  # the oldest went first
    assert store.get("app", "resp_2") is not None
    assert store.get("other", "resp_2") is None
    aged = ResponseStore(max_age_s=-1)  # every response is already too old
    aged.put("app", {"id": "resp_x"}, [])
    assert aged.get("app", "resp_x") is None


# -- reasoning -----------------------------------------------------------------------------------
THOUGHT = "".join(REASONING)


def thinking_gateway(tmp_path: Path, **fake: Any) -> Gateway:
    return build_gateway(tmp_path / "gateway", FakeBackend(reasoning=True, **fake))


def test_a_thinking_model_answers_with_a_reasoning_item_first(tmp_path: Path) -> None:
    gateway = thinking_gateway(tmp_path)

    async def ask(client: openai.AsyncOpenAI) -> Any:
        return await client.responses.create(
            model="tiny", input="Hello?", reasoning={"effort": "low"}
        )

    response = with_sdk(gateway, ask)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.summary == [] and reasoning.status == "completed"
    assert [(part.type, part.text) for part in reasoning.content or []] == [
        ("reasoning_text", THOUGHT)
    ]
    assert message.type == "message" and response.output_text == TEXT
    assert response.reasoning is not None and response.reasoning.effort == "low"
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 5
    assert gateway.backend.sent[-1].payload["reasoning_effort"] == "low"


def test_the_reasoning_item_streams_before_the_message(tmp_path: Path) -> None:
    gateway = thinking_gateway(tmp_path)

    async def ask(client: openai.AsyncOpenAI) -> tuple[list[Any], Any]:
        async with client.responses.stream(model="tiny", input="Hello?") as stream:
            events = [event async for event in stream]
            return events, await stream.get_final_response()

    events, final = with_sdk(gateway, ask)
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * len(REASONING),
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(CONTENT),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    indexes = [
        (event.type, event.output_index) for event in events if hasattr(event, "output_index")
    ]
    assert {index for kind, index in indexes if "reasoning" in kind} == {0}
    assert {index for kind, index in indexes if "output_text" in kind} == {1}
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == THOUGHT and final.output_text == TEXT
    assert final.usage.output_tokens_details.reasoning_tokens == 5


# OpenAI's API reference (streaming events "response.reasoning_text.delta" and ".done"), and
# the reasoning item of its open-weight models' Responses server (gpt-oss).
REASONING_TEXT_DELTA = {
    "type": "response.reasoning_text.delta",
    "item_id": "rs_123",
    "output_index": 0,
    "content_index": 0,
    "delta": "The",
    "sequence_number": 1,
}
REASONING_TEXT_DONE = {
    "type": "response.reasoning_text.done",
    "item_id": "rs_123",
    "output_index": 0,
    "content_index": 0,
    "text": "The user is asking...",
    "sequence_number": 4,
}
REASONING_ITEM_DONE = {
    "type": "response.output_item.done",
    "output_index": 0,
    "sequence_number": 5,
    "item": {
        "id": "rs_123",
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "The user is asking..."}],
    },
}


def test_reasoning_events_have_the_documented_shape(tmp_path: Path) -> None:
    gateway = thinking_gateway(tmp_path, tool_call=True)
    body = {"model": "tiny", "input": "Weather?", "tools": [WEATHER], "stream": True}
    events = [data for _, data in sse_events(gateway.post("/v1/responses", body).content)]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_kind.setdefault(event["type"], []).append(event)
    for delta in by_kind["response.reasoning_text.delta"]:
        assert_shape(delta, REASONING_TEXT_DELTA)
    (done,) = by_kind["response.reasoning_text.done"]
    assert_shape(done, REASONING_TEXT_DONE)
    assert done["text"] == THOUGHT
    first_done = by_kind["response.output_item.done"][0]
    assert_shape(first_done, REASONING_ITEM_DONE)
    # Output indexes follow the output list: reasoning, message, then the function call.
    added = [(e["output_index"], e["item"]["type"]) for e in by_kind["response.output_item.added"]]
    assert added == [(0, "reasoning"), (1, "message"), (2, "function_call")]
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]


def test_effort_none_asks_for_no_thoughts_and_shows_none(tmp_path: Path) -> None:
    gateway = thinking_gateway(tmp_path)  # a model that thinks all the same
    body = {"model": "tiny", "input": "Hi", "reasoning": {"effort": "none"}}
    whole = gateway.post("/v1/responses", body).json()
    assert [item["type"] for item in whole["output"]] == ["message"]
    assert whole["reasoning"] == {"effort": "none", "summary": None}
    assert gateway.backend.sent[-1].payload["reasoning_effort"] == "none"
    streamed = gateway.post("/v1/responses", {**body, "stream": True})
    assert "reasoning" not in {
        data.get("item", {}).get("type") for _, data in sse_events(streamed.content)
    }
    plain = gateway.post("/v1/responses", {"model": "tiny", "input": "Hi"}).json()
    assert plain["reasoning"] == {"effort": None, "summary": None}
    assert "reasoning_effort" not in gateway.backend.sent[-1].payload


@pytest.mark.parametrize(
    "reasoning", [{"effort": "max"}, {"effort": "ultra"}, {"effort": 2}, "low"]
)
def test_an_effort_it_cannot_give_is_a_400(gateway: Gateway, reasoning: Any) -> None:
    answer = gateway.post("/v1/responses", {"model": "tiny", "input": "x", "reasoning": reasoning})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"].startswith("reasoning")
    assert gateway.backend.sent == []


def test_reasoning_items_sent_back_become_the_next_assistant_turns_thoughts(
    gateway: Gateway,
) -> None:
    thought = {"type": "reasoning", "id": "rs_1", "summary": []}
    body = {
        "model": "tiny",
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {**thought, "content": [{"type": "reasoning_text", "text": "Call the tool."}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {**thought, "content": [{"type": "reasoning_text", "text": "Now answer."}]},
            {"role": "assistant", "content": "It is sunny."},
            {**thought, "encrypted_content": "gAAAA..."},  # OpenAI's own: no text to keep
            {"role": "user", "content": "Thanks!"},
        ],
    }
    assert gateway.post("/v1/responses", body).status_code == 200
    messages = gateway.backend.sent[-1].payload["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[1]["reasoning_content"] == "Call the tool."
    assert messages[3]["reasoning_content"] == "Now answer."
    assert not any("reasoning_content" in m for m in (messages[0], messages[2], messages[4]))
    broken = {**body, "input": [{"type": "reasoning", "content": "not a list"}]}
    assert gateway.post("/v1/responses", broken).status_code == 400


def test_a_stored_responses_reasoning_comes_back_in_the_follow_up(tmp_path: Path) -> None:
    gateway = thinking_gateway(tmp_path)
    first = gateway.post("/v1/responses", {"model": "tiny", "input": "Hi"}).json()
    follow = {"model": "tiny", "input": "And?", "previous_response_id": first["id"]}
    assert gateway.post("/v1/responses", follow).status_code == 200
    assert gateway.backend.sent[-1].payload["messages"][1] == {
        "role": "assistant",
        "content": TEXT,
        "reasoning_content": THOUGHT,
    }


def test_input_tokens_counts_the_prompt_a_request_would_have(gateway: Gateway) -> None:
    first = gateway.post("/v1/responses", {"model": "tiny", "input": "My name is Ada."}).json()

    async def count(client: openai.AsyncOpenAI) -> Any:
        return await client.responses.input_tokens.count(
            model="tiny",
            input="What is my name?",
            instructions="Be brief.",
            tools=[WEATHER],  # type: ignore[list-item]
            previous_response_id=first["id"],
            reasoning={"effort": "high"},
        )

    counted = with_sdk(gateway, count)
    assert (counted.object, counted.input_tokens) == (
        "response.input_tokens",
        PROMPT_TOKENS_COUNTED,
    )
    sent = gateway.backend.sent[-1]
    assert sent.path == "/tokenize/chat"
    assert [m["role"] for m in sent.payload["messages"]] == ["system", "user", "assistant", "user"]
    assert sent.payload["tools"][0]["function"]["name"] == "get_weather"
    assert sent.payload["reasoning_effort"] == "high"
    assert len(gateway.backend.sent) == 2  # counting generates nothing


def test_input_tokens_refusals_are_openai_errors(tmp_path: Path, gateway: Gateway) -> None:
    path = "/v1/responses/input_tokens"
    for body, status in [
        ({"model": "tiny"}, 400),
        ({"model": "tiny", "input": "x", "previous_response_id": "resp_1"}, 400),
        ({"model": "tiny", "input": "x", "reasoning": {"effort": "max"}}, 400),
        ({"model": "nope", "input": "x"}, 404),
    ]:
        answer = gateway.post(path, body)
        assert answer.status_code == status, (body, answer.text)
        assert isinstance(answer.json()["error"]["message"], str)
    assert gateway.post(path, {"model": "tiny", "input": "x"}, headers={}).status_code == 401
    cloud = build_gateway(tmp_path / "cloud", FakeBackend(name="openai"))
    answer = cloud.post(path, {"model": "tiny", "input": "x"})
    assert answer.status_code == 400 and "local models only" in answer.json()["error"]["message"]
    assert cloud.backend.sent == []
