"""Anthropic's Messages API with the official ``anthropic`` SDK against a daemon on the
starter model, streaming and not, plus count_tokens and the error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> Iterator[anthropic.Anthropic]:
    # The SDK sends the key as x-api-key, as Anthropic's API wants.
    with anthropic.Anthropic(base_url=daemon.url, api_key=daemon.admin_key, max_retries=0) as sdk:
        yield sdk


def test_a_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=STARTER_MODEL,
        max_tokens=16,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say hello."}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == STARTER_MODEL and message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 5 and 0 < message.usage.output_tokens <= 16


def test_a_streamed_message_matches_the_plain_one(client: anthropic.Anthropic) -> None:
    request = {
        "model": STARTER_MODEL,
        "max_tokens": 24,
        # This SDK version no longer has a temperature parameter; the API still takes it.
        "extra_body": {"temperature": 0},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a color."}]}],
    }
    # The first request fills the prefix cache; the next ones reuse it, and a prompt read in
    # another batch shape may tip near-tied logits. Compare two requests in the same state.
    client.messages.create(**request)  # type: ignore[call-overload]
    plain = client.messages.create(**request)  # type: ignore[call-overload]
    with client.messages.stream(**request) as stream:  # type: ignore[arg-type]
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == plain.content[0].text == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.stop_reason == plain.stop_reason


def test_the_event_sequence_is_anthropics(daemon: DaemonProcess) -> None:
    with httpx.stream(
        "POST",
        f"{daemon.url}/v1/messages",
        headers={"x-api-key": daemon.admin_key, "anthropic-version": "2023-06-01"},
        json={
            "model": STARTER_MODEL,
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    events = [line[len("event: ") :] for line in lines if line.startswith("event: ")]
    datas = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert set(events[3:-3]) == {"content_block_delta"}
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert [d["type"] for d in datas] == events
    assert datas[-2]["delta"]["stop_reason"] == "max_tokens"
    assert datas[-2]["usage"]["output_tokens"] == 5


def test_count_tokens(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    counted = client.messages.count_tokens(model=STARTER_MODEL, messages=messages)  # type: ignore[arg-type]
    reply = client.messages.create(model=STARTER_MODEL, max_tokens=1, messages=messages)  # type: ignore[arg-type]
    assert counted.input_tokens == reply.usage.input_tokens


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (
            {
                "model": "no-such-model",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
            },
            404,
            "not_found_error",
        ),
        (
            {"model": STARTER_MODEL, "messages": [{"role": "user", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": STARTER_MODEL,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            },
            400,
            "invalid_request_error",
        ),
    ],
)
def test_errors_use_anthropics_shape(
    daemon: DaemonProcess, body: dict[str, object], status: int, kind: str
) -> None:
    response = httpx.post(
        f"{daemon.url}/v1/messages", headers={"x-api-key": daemon.admin_key}, json=body, timeout=30
    )
    assert response.status_code == status
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == kind and error["error"]["message"]


def test_a_wrong_key_is_an_authentication_error(daemon: DaemonProcess) -> None:
    bad = anthropic.Anthropic(base_url=daemon.url, api_key="wrong", max_retries=0)
    with bad, pytest.raises(anthropic.AuthenticationError) as raised:
        bad.messages.create(
            model=STARTER_MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
