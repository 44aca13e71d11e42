"""Tool calling through the three protocols (``openai``, ``anthropic`` and ``ollama`` SDKs),
with real generation on copies of the starter model that carry real tool-calling templates:
Qwen2.5's (calls inside <tool_call> tags) and Llama 3.1's (bare JSON).

A 135M model rarely chooses to call a tool on its own, so free ("auto") calls are drawn out
with one earlier call in the conversation, which it copies; forced calls are held to the
tool's schema by a grammar. The starter's own template takes no tools: a clear 400.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.imported_models import ModelImport, daemon_with_models
from tests.helpers.model_files import templated_starter, tool_use_starter

HERMES_MODEL = "qwen-tools"
JSON_MODEL = "llama-tools"
TOOL_USE_MODEL = "tool-use-template"  # tools only in its tokenizer.chat_template.tool_use
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER_PARAMETERS,
        },
    }
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
# One earlier call in the conversation, which the model copies for the next city.
EARLIER_CALL: list[Any] = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "user", "content": "Weather in London?"},
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    home = tmp_path_factory.mktemp("tools-daemon")
    models = [
        ModelImport(HERMES_MODEL, templated_starter(home, HERMES_MODEL, "qwen2.5-instruct.jinja")),
        ModelImport(JSON_MODEL, templated_starter(home, JSON_MODEL, "llama3.1-instruct.jinja")),
        ModelImport(
            TOOL_USE_MODEL, tool_use_starter(home, TOOL_USE_MODEL, "qwen2.5-instruct.jinja")
        ),
    ]
    with daemon_with_models(home, models) as running:
        yield running


def weather_arguments(arguments: str | dict[str, Any]) -> dict[str, Any]:
    """The call's arguments, checked against the tool's schema."""
    parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    assert isinstance(parsed.get("city"), str) and parsed["city"]
    assert set(parsed) <= {"city", "unit"}
    assert parsed.get("unit", "celsius") in ("celsius", "fahrenheit")
    return parsed


@pytest.mark.parametrize("model", [HERMES_MODEL, JSON_MODEL, TOOL_USE_MODEL])
def test_openai_forced_call(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS,
        tool_choice=NAMED,  # type: ignore[arg-type]
        max_tokens=60,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    weather_arguments(calls[0].function.arguments)  # type: ignore[union-attr]
    assert calls[0].id.startswith("call_")


def test_openai_streamed_required_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=HERMES_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS,
        tool_choice="required",
        max_tokens=60,
        stream=True,
    )
    names, arguments, reasons = [], "", []
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                if call.function and call.function.name:
                    names.append(call.function.name)
                arguments += (call.function.arguments if call.function else None) or ""
            reasons.append(choice.finish_reason)
    assert names == ["get_weather"]
    weather_arguments(arguments)
    assert reasons[-1] == "tool_calls"


def test_openai_auto_call_then_the_result(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=HERMES_MODEL, messages=EARLIER_CALL, tools=TOOLS, max_tokens=60, temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    call = (choice.message.tool_calls or [])[0]
    assert weather_arguments(call.function.arguments) == {"city": "London"}  # type: ignore[union-attr]
    # The result goes back as a tool message; the model answers in text.
    answer = client.chat.completions.create(
        model=HERMES_MODEL,
        messages=[
            *EARLIER_CALL,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 14}'},
        ],
        tools=TOOLS,
        tool_choice="none",
        max_tokens=16,
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls


def test_the_tool_result_reaches_the_prompt(daemon: DaemonProcess) -> None:
    """Anthropic's count_tokens renders the prompt: a longer tool result makes it longer."""
    counts = []
    for result in ("sunny", "sunny, 21 degrees, light wind from the west, no rain expected"):
        response = httpx.post(
            f"{daemon.url}/v1/messages/count_tokens",
            headers={"x-api-key": daemon.admin_key},
            json={
                "model": HERMES_MODEL,
                "tools": [{"name": "get_weather", "input_schema": WEATHER_PARAMETERS}],
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "tool_use",
                                "id": "t1",
                                "name": "get_weather",
                                "input": {"city": "Paris"},
                            }
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t1", "content": result}
                        ],
                    },
                ],
            },
            timeout=60,
        )
        assert response.status_code == 200, response.text
        counts.append(response.json()["input_tokens"])
    assert counts[1] > counts[0] + 10


def test_models_without_tool_support_get_a_clear_error(
    client: openai.OpenAI, daemon: DaemonProcess
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=STARTER_MODEL,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=TOOLS,
        )
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["code"] == "tools_not_supported" and error["param"] == "tools"
    assert "does not support tools" in error["message"]
    with (
        ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk,
        pytest.raises(ollama.ResponseError) as refused,
    ):
        sdk.chat(model=STARTER_MODEL, messages=[{"role": "user", "content": "hi"}], tools=TOOLS)
    assert refused.value.status_code == 400 and "does not support tools" in refused.value.error


def test_tool_requests_are_checked(client: openai.OpenAI) -> None:
    for bad in [
        {"tool_choice": {"type": "function", "function": {"name": "launch"}}},
        {"tools": TOOLS + TOOLS},
        {"tools": [{"type": "function", "function": {"name": "has spaces"}}]},
    ]:
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model=HERMES_MODEL,
                messages=[{"role": "user", "content": "hi"}],
                **{"tools": TOOLS, **bad},  # type: ignore[arg-type]
            )


def test_anthropic_tool_use_and_tool_result(daemon: DaemonProcess) -> None:
    tools: list[Any] = [
        {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_PARAMETERS}
    ]
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    with anthropic.Anthropic(base_url=daemon.url, api_key=daemon.admin_key, max_retries=0) as sdk:
        message = sdk.messages.create(
            model=HERMES_MODEL,
            max_tokens=60,
            tools=tools,
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=question,
        )
        assert message.stop_reason == "tool_use"
        use = message.content[-1]
        assert use.type == "tool_use" and use.name == "get_weather"
        weather_arguments(use.input)  # type: ignore[arg-type]
        with sdk.messages.stream(
            model=HERMES_MODEL,
            max_tokens=60,
            tools=tools,
            tool_choice={"type": "any"},
            messages=question,
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_message()
        assert "input_json" in kinds and final.stop_reason == "tool_use"
        streamed_use = final.content[-1]
        assert streamed_use.type == "tool_use"
        weather_arguments(streamed_use.input)  # type: ignore[arg-type]
        answer = sdk.messages.create(
            model=HERMES_MODEL,
            max_tokens=16,
            tools=tools,
            messages=[
                *question,
                {"role": "assistant", "content": message.content},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}
                    ],
                },
            ],
        )
        assert answer.content and answer.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_anthropic_server_tools_are_refused(daemon: DaemonProcess) -> None:
    with (
        anthropic.Anthropic(base_url=daemon.url, api_key=daemon.admin_key, max_retries=0) as sdk,
        pytest.raises(anthropic.BadRequestError) as raised,
    ):
        sdk.messages.create(
            model=HERMES_MODEL,
            max_tokens=10,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
            messages=[{"role": "user", "content": "hi"}],
        )
    assert "server tools" in str(raised.value)


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_tool_calls(daemon: DaemonProcess, stream: bool) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        # Ollama's shape: arguments as an object, no call id.
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "user", "content": "Weather in London?"},
    ]
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        options = {"temperature": 0, "num_predict": 60}
        if stream:
            parts = list(
                sdk.chat(
                    model=HERMES_MODEL, messages=messages, tools=TOOLS, options=options, stream=True
                )
            )
            calls = [call for part in parts for call in part.message.tool_calls or []]
            assert parts[-1].done and not parts[-1].message.tool_calls
        else:
            reply = sdk.chat(model=HERMES_MODEL, messages=messages, tools=TOOLS, options=options)
            assert reply.done and reply.done_reason == "stop"
            calls = list(reply.message.tool_calls or [])
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert dict(calls[0].function.arguments) == {"city": "London"}


def test_ollama_show_lists_the_tools_capability(daemon: DaemonProcess) -> None:
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        assert "tools" in (sdk.show(HERMES_MODEL).capabilities or [])
        assert "tools" in (sdk.show(TOOL_USE_MODEL).capabilities or [])
        assert "tools" not in (sdk.show(STARTER_MODEL).capabilities or [])
