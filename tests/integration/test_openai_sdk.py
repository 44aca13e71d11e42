"""The official openai SDK against a real daemon serving the starter model."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess


def test_models_lists_the_starter_model(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == [STARTER_MODEL]
    assert client.models.retrieve(STARTER_MODEL).id == STARTER_MODEL


def test_chat_completion(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=STARTER_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage is not None
    assert 0 < response.usage.completion_tokens <= 12
    assert response.usage.prompt_tokens > 5


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=STARTER_MODEL,
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert text
    assert finish == ["length"]
    assert len(usage) == 1 and usage[0].completion_tokens == 16
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_stream_text_matches_non_stream_for_same_seed(client: openai.OpenAI) -> None:
    args = {
        "model": STARTER_MODEL,
        "messages": [{"role": "user", "content": "Tell me a short story."}],
        "max_tokens": 24,
        "temperature": 0.9,
        "seed": 1234,
    }
    whole = client.chat.completions.create(**args).choices[0].message.content
    again = client.chat.completions.create(**args).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**args, stream=True)
        if c.choices
    )
    assert whole == again == streamed


def test_completion_and_stop_string(client: openai.OpenAI) -> None:
    free = client.completions.create(
        model=STARTER_MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0
    )
    text = free.choices[0].text
    assert "5" in text
    stopped = client.completions.create(
        model=STARTER_MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=["7"]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert "7" not in stopped.choices[0].text
    assert text.startswith(stopped.choices[0].text)


def test_completion_stream(client: openai.OpenAI) -> None:
    pieces = [
        chunk.choices[0].text
        for chunk in client.completions.create(
            model=STARTER_MODEL, prompt="The sky is", max_tokens=8, temperature=0, stream=True
        )
        if chunk.choices
    ]
    assert "".join(pieces)


def test_embeddings_base64_and_float(client: openai.OpenAI, daemon: DaemonProcess) -> None:
    # The SDK asks for base64 by default and decodes it.
    result = client.embeddings.create(model=STARTER_MODEL, input=["hello world", "goodbye"])
    assert [item.index for item in result.data] == [0, 1]
    first = result.data[0].embedding
    assert len(first) == 576
    assert abs(sum(v * v for v in first) - 1.0) < 1e-3  # normalised
    assert first != result.data[1].embedding
    assert result.usage.prompt_tokens > 0
    raw = httpx.post(
        f"{daemon.base_url}/embeddings",
        headers=daemon.headers(),
        json={"model": STARTER_MODEL, "input": "hello world", "encoding_format": "float"},
    ).json()
    assert raw["data"][0]["embedding"] == pytest.approx(first, abs=1e-5)


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    response = client.chat.completions.create(
        model=STARTER_MODEL,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_tokens=80,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
    )
    data = json.loads(response.choices[0].message.content or "")
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_json_object_response_format(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=STARTER_MODEL,
        messages=[
            {"role": "user", "content": 'Output the JSON object {"ok": true} and nothing else.'}
        ],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content or ""), dict)


def test_responses_name_the_backend(daemon: DaemonProcess) -> None:
    response = httpx.post(
        f"{daemon.base_url}/chat/completions",
        headers=daemon.headers(),
        json={
            "model": STARTER_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
        },
    )
    assert response.status_code == 200
    assert response.headers["x-localserve-backend"] == "local"


def complete_text(
    client: openai.OpenAI, prompt: str = "My favourite fruits are", **sampling: object
) -> str:
    # top_k and min_p are llama.cpp extras: the SDK passes them through extra_body.
    extra = {name: sampling.pop(name) for name in ("top_k", "min_p") if name in sampling}
    result = client.completions.create(
        model=STARTER_MODEL,
        prompt=prompt,
        max_tokens=24,
        extra_body=extra or None,
        **sampling,  # type: ignore[arg-type]
    )
    return result.choices[0].text


def test_sampling_parameters_reach_the_sampler(client: openai.OpenAI) -> None:
    greedy = complete_text(client, temperature=0)
    # top_k=1 and min_p=1 each leave only the most likely token: hot sampling becomes greedy.
    assert complete_text(client, temperature=1.5, top_k=1, seed=7) == greedy
    assert complete_text(client, temperature=1.5, min_p=1.0, seed=7) == greedy
    # Without them, the same hot sampling wanders off, reproducibly for one seed.
    hot = complete_text(client, temperature=1.5, seed=7)
    assert hot != greedy
    assert complete_text(client, temperature=1.5, seed=7) == hot
    assert complete_text(client, temperature=1.5, top_p=0.01, seed=7) == greedy
    # Counting repeats ", " and digits: penalties on repeated tokens must change the greedy text.
    counting = complete_text(client, "1, 2, 3, 4,", temperature=0)
    assert complete_text(client, "1, 2, 3, 4,", temperature=0, frequency_penalty=2.0) != counting
    assert complete_text(client, "1, 2, 3, 4,", temperature=0, presence_penalty=2.0) != counting


def test_concurrent_requests_all_complete(client: openai.OpenAI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def ask(index: int) -> str:
        stream = client.chat.completions.create(
            model=STARTER_MODEL,
            messages=[{"role": "user", "content": f"Say the number {index}."}],
            max_tokens=12,
            temperature=0,
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert all(answers)


def test_responses_api_with_the_real_model_whole_and_streamed(client: openai.OpenAI) -> None:
    """``client.responses`` over the starter model: the streamed text is the whole one's (greedy),
    and the usage counts the tokens the model wrote."""
    asked = {
        "model": STARTER_MODEL,
        "input": "What is the capital of France?",
        "max_output_tokens": 12,
        "temperature": 0,
    }
    whole = client.responses.create(**asked)  # type: ignore[call-overload]
    assert whole.status in {"completed", "incomplete"}
    assert whole.output_text.strip()
    assert whole.usage is not None and 0 < whole.usage.output_tokens <= 12
    with client.responses.stream(**asked) as stream:
        events = list(stream)
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    last = events[-1]  # response.incomplete when max_output_tokens ran out, as OpenAI's API does
    assert last.type == f"response.{whole.status}"
    assert "".join(deltas) == last.response.output_text == whole.output_text  # type: ignore[union-attr]
