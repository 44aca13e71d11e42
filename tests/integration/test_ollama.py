"""Ollama's API with the official ``ollama`` Python client against a daemon on the starter
model: chat and generate (streaming and not), embed, tags, show, ps, keep_alive, pull from a
fake Hub and delete, plus the NDJSON shape and the error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import ollama
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.fake_hub import FakeHub
from tests.helpers.model_files import starter_path

REPO = "example/Ollamapull-GGUF"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, {"Ollamapull-Q4_1.gguf": starter_path().read_bytes()})
        yield fake


@pytest.fixture(scope="module")
def daemon(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with hub.daemon(tmp_path_factory.mktemp("ollama-daemon")) as running:
        running.wait_until_model("ready")
        yield running


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> Iterator[ollama.Client]:
    # Ollama clients send the key as a Bearer token when configured with one.
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        yield sdk


def test_chat(client: ollama.Client) -> None:
    reply = client.chat(
        model=STARTER_MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        options={"num_predict": 8, "temperature": 0},
    )
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.eval_count and 0 < reply.eval_count <= 8 and reply.prompt_eval_count
    assert reply.total_duration and reply.total_duration > 0


def test_streamed_chat_matches_the_plain_one(client: ollama.Client) -> None:
    request = {
        "model": STARTER_MODEL,
        "messages": [{"role": "user", "content": "Name a fruit."}],
        "options": {"num_predict": 16, "temperature": 0},
    }
    # The first request fills the prefix cache; the next ones reuse it, and a prompt read in
    # another batch shape may tip near-tied logits. Compare two requests in the same state.
    client.chat(**request)  # type: ignore[call-overload]
    plain = client.chat(**request)  # type: ignore[call-overload]
    parts = list(client.chat(**request, stream=True))  # type: ignore[call-overload]
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == plain.message.content
    assert parts[-1].eval_count == plain.eval_count


def test_generate_templated_raw_and_json(client: ollama.Client) -> None:
    templated = client.generate(
        model=STARTER_MODEL, prompt="Say hi.", system="Be brief.", options={"num_predict": 8}
    )
    assert templated.response and templated.done
    raw = client.generate(
        model=STARTER_MODEL,
        prompt="def add(a, b):\n    return",
        raw=True,
        options={"num_predict": 8, "temperature": 0},
    )
    assert raw.response and raw.done
    streamed = "".join(
        part.response
        for part in client.generate(
            model=STARTER_MODEL,
            prompt="def add(a, b):\n    return",
            raw=True,
            options={"num_predict": 8, "temperature": 0},
            stream=True,
        )
    )
    assert streamed == raw.response
    as_json = client.generate(
        model=STARTER_MODEL,
        prompt="A JSON object with a key name.",
        format="json",
        options={"num_predict": 48},
    )
    # Grammar-constrained: a complete object when it stopped, an object's start when cut.
    if as_json.done_reason == "stop":
        assert isinstance(json.loads(as_json.response), dict)
    else:
        assert as_json.response.lstrip().startswith("{")


def test_embed(client: ollama.Client) -> None:
    result = client.embed(model=STARTER_MODEL, input=["one", "two"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 576


def test_tags_show_ps_and_version(client: ollama.Client, daemon: DaemonProcess) -> None:
    names = [m.model for m in client.list().models]
    assert STARTER_MODEL in names
    shown = client.show(STARTER_MODEL)
    assert shown.details.family == "llama" and shown.details.quantization_level == "Q4_1"
    assert shown.modelinfo["llama.context_length"] == 8192  # type: ignore[index]
    assert STARTER_MODEL in [m.model for m in client.ps().models]
    version = httpx.get(f"{daemon.url}/api/version", headers=daemon.headers()).json()
    assert version["version"]


def test_keep_alive_zero_unloads(client: ollama.Client, daemon: DaemonProcess) -> None:
    client.generate(model=STARTER_MODEL, prompt="Hi", keep_alive=0, options={"num_predict": 2})
    assert STARTER_MODEL not in [m.model for m in client.ps().models]
    client.generate(model=STARTER_MODEL)  # an empty prompt loads it again
    assert STARTER_MODEL in [m.model for m in client.ps().models]


def test_pull_progress_and_delete(client: ollama.Client, daemon: DaemonProcess) -> None:
    events = list(client.pull(f"hf.co/{REPO}", stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    progress = [e for e in events if e.total]
    assert progress and progress[-1].completed == progress[-1].total == 98_362_432
    assert "ollamapull-q4_1" in [m.model for m in client.list().models]
    reply = client.generate(model="ollamapull-q4_1", prompt="Hi", options={"num_predict": 2})
    assert reply.done
    client.delete("ollamapull-q4_1")
    assert "ollamapull-q4_1" not in [m.model for m in client.list().models]


def test_pull_and_delete_need_the_admin_key(daemon: DaemonProcess) -> None:
    key = daemon.cli("key", "add", "ollama-app").stdout.strip()
    app = ollama.Client(host=daemon.url, headers={"authorization": f"Bearer {key}"})
    with app:
        assert app.list().models  # reading is fine with a client key
        with pytest.raises(ollama.ResponseError) as raised:
            app.delete(STARTER_MODEL)
    assert raised.value.status_code == 403


def test_errors_use_ollamas_shape(daemon: DaemonProcess) -> None:
    response = httpx.post(
        f"{daemon.url}/api/chat",
        headers=daemon.headers(),
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 404 and list(response.json()) == ["error"]
    unauthorized = httpx.get(f"{daemon.url}/api/tags")
    assert unauthorized.status_code == 401 and "error" in unauthorized.json()
    sdk = ollama.Client(host=daemon.url, headers=daemon.headers())
    with sdk, pytest.raises(ollama.ResponseError) as raised:
        sdk.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 404 and "does not exist" in raised.value.error


def test_ndjson_stream_shape(daemon: DaemonProcess) -> None:
    with httpx.stream(
        "POST",
        f"{daemon.url}/api/generate",
        headers=daemon.headers(),
        json={"model": STARTER_MODEL, "prompt": "Hi", "options": {"num_predict": 4}},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert all(set(line) >= {"model", "created_at", "response", "done"} for line in lines)
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 4
    assert {"total_duration", "prompt_eval_count", "eval_duration"} <= set(lines[-1])
