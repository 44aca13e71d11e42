"""Cloud forwarding through a real daemon to a fake OpenAI-compatible provider, with the real
``openai`` SDK as the client: routing, pass-through streaming, upstream errors, retries,
timeouts, local-only, mappings for models too large, and the usage ledger."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess, run_cli
from tests.helpers.fake_cloud import CHUNKS, FakeCloud, Received
from tests.helpers.model_files import starter_path, unknown_architecture_copy

HI: list[Any] = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud() as fake:
        yield fake


@pytest.fixture(autouse=True)
def reset_cloud(cloud: FakeCloud) -> None:
    cloud.script.clear()
    cloud.chunk_delay = 0.0
    cloud.received.clear()
    cloud.stream_times.clear()


@pytest.fixture(scope="module")
def daemon(cloud: FakeCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    home = tmp_path_factory.mktemp("cloud-daemon")
    with DaemonProcess(home, env={"LOCALSERVE_REQUEST_TIMEOUT": "2"}) as running:
        running.wait_until_model("ready")
        cloud.add_to(running)
        yield running


def chat(daemon: DaemonProcess, model: str, **kwargs: object) -> httpx.Response:
    return httpx.post(
        f"{daemon.base_url}/chat/completions",
        headers=daemon.headers(),
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}], **kwargs},
        timeout=30,
    )


def test_local_and_cloud_models_share_one_endpoint_and_key(
    daemon: DaemonProcess, cloud: FakeCloud
) -> None:
    sdk = daemon.openai()
    raw = sdk.chat.completions.with_raw_response.create(
        model="fake/gpt-test",
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-client-secret": "do-not-forward"},
    )
    assert raw.headers["x-localserve-backend"] == "fake"
    reply = raw.parse()
    assert reply.choices[0].message.content == "".join(CHUNKS)
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    local = sdk.chat.completions.with_raw_response.create(
        model=STARTER_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert local.headers["x-localserve-backend"] == "local"

    (sent,) = [r for r in cloud.received if r.path == "/v1/chat/completions"]
    assert sent.body is not None and sent.body["model"] == "gpt-test"
    assert sent.headers["authorization"] == f"Bearer {cloud.key}"
    assert "x-api-key" not in sent.headers and "x-client-secret" not in sent.headers
    assert not any(daemon.admin_key in value for value in sent.headers.values())
    key_file = daemon.home / "config" / "provider-keys" / "fake.key"
    assert key_file.read_text().strip() == cloud.key and key_file.stat().st_mode & 0o777 == 0o600
    assert cloud.key not in (daemon.home / "config" / "providers.json").read_text()
    assert cloud.key not in daemon.output() + (daemon.home / "logs" / "daemon.log").read_text()


def test_models_lists_local_and_cloud_models(daemon: DaemonProcess) -> None:
    deadline = time.monotonic() + 15
    owners: dict[str, str] = {}
    while time.monotonic() < deadline and "fake/gpt-test" not in owners:
        owners = {m.id: m.owned_by for m in daemon.openai().models.list()}
        time.sleep(0.2)
    assert owners["fake/gpt-test"] == "fake" and owners["fake/gpt-big"] == "fake"
    assert owners[STARTER_MODEL] == "local"


def test_streams_pass_through_as_they_arrive(daemon: DaemonProcess, cloud: FakeCloud) -> None:
    cloud.chunk_delay = 0.3
    arrivals: list[float] = []
    pieces: list[str] = []
    usage_chunks = 0
    for chunk in daemon.openai().chat.completions.create(
        model="fake/gpt-test", messages=[{"role": "user", "content": "Hi"}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            pieces.append(chunk.choices[0].delta.content)
        usage_chunks += chunk.usage is not None
    assert "".join(pieces) == "".join(CHUNKS)
    # Each piece reaches the client within a few ms of the upstream sending it: no buffering.
    lags = [arrived - sent for arrived, sent in zip(arrivals, cloud.stream_times, strict=True)]
    assert max(lags) < 0.15, lags
    # We asked upstream for usage (for the ledger); the client did not, so it sees none.
    sent = last_post(cloud).body
    assert sent is not None and sent["stream_options"] == {"include_usage": True}
    assert usage_chunks == 0


def test_usage_reaches_a_client_that_asks_for_it(daemon: DaemonProcess) -> None:
    chunks = list(
        daemon.openai().chat.completions.create(
            model="fake/gpt-test",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11


def test_a_providers_own_4xx_keeps_its_status_and_message(
    daemon: DaemonProcess, cloud: FakeCloud
) -> None:
    cloud.script.append("400")
    with pytest.raises(openai.BadRequestError) as raised:
        daemon.openai().chat.completions.create(
            model="fake/gpt-test", messages=[{"role": "user", "content": "Hi"}]
        )
    assert raised.value.status_code == 400
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["message"] == "Upstream says 400 on purpose."


def test_a_failing_provider_is_a_502_that_names_it_and_quotes_it(
    daemon: DaemonProcess, cloud: FakeCloud
) -> None:
    """A provider's 500 is not localserve's: the client gets 502 (bad gateway) with both."""
    cloud.script.append("500")
    with pytest.raises(openai.InternalServerError) as raised:
        daemon.openai().chat.completions.create(
            model="fake/gpt-test", messages=[{"role": "user", "content": "Hi"}]
        )
    assert raised.value.status_code == 502
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["message"] == (
        "The provider 'fake' is failing (HTTP 500: Upstream says 500 on purpose); try again later."
    )
    assert raised.value.body["code"] == "upstream_error"


def test_a_short_retry_after_is_honoured(daemon: DaemonProcess, cloud: FakeCloud) -> None:
    cloud.script.append("429:1")
    started = time.monotonic()
    response = chat(daemon, "fake/gpt-test")
    assert response.status_code == 200
    assert 1.0 <= time.monotonic() - started < 5
    assert len([r for r in cloud.received if r.path == "/v1/chat/completions"]) == 2


def test_a_long_retry_after_reaches_the_client(daemon: DaemonProcess, cloud: FakeCloud) -> None:
    cloud.script.append("429:60")
    started = time.monotonic()
    response = chat(daemon, "fake/gpt-test")
    assert time.monotonic() - started < 2
    assert response.status_code == 429 and response.headers["retry-after"] == "60"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_hanging_provider_becomes_a_504(daemon: DaemonProcess, cloud: FakeCloud) -> None:
    cloud.script.append("hang")
    cloud.hang_seconds = 6
    started = time.monotonic()
    response = chat(daemon, "fake/gpt-test")
    assert response.status_code == 504 and time.monotonic() - started < 5
    assert response.json()["error"]["code"] == "backend_timeout"
    assert response.json()["error"]["message"] == (
        "The provider 'fake' did not answer within 2 s (slow or no network)."
    )


def test_a_stream_dropped_midway_ends_with_an_error_event(
    daemon: DaemonProcess, cloud: FakeCloud
) -> None:
    cloud.script.append("drop")
    with httpx.stream(
        "POST",
        f"{daemon.base_url}/chat/completions",
        headers=daemon.headers(),
        json={
            "model": "fake/gpt-test",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
        },
        timeout=30,
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200
    assert json.loads(events[0][6:])["choices"][0]["delta"]["content"] == CHUNKS[0]
    assert "error" in json.loads(events[-2][6:]) and events[-1] == "data: [DONE]"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("name", "url", "message"),
    [
        ("gone", "http://127.0.0.1:{port}/v1", "127.0.0.1 refused the connection."),
        (
            "nowhere",
            "http://api.provider.invalid/v1",
            "api.provider.invalid does not resolve (no network?).",
        ),
    ],
    ids=["refused", "dns"],
)
def test_an_unreachable_provider_is_a_502_naming_it(
    daemon: DaemonProcess, name: str, url: str, message: str
) -> None:
    url = url.format(port=closed_port())
    added = daemon.cli("cloud", "add", name, "--base-url", url)
    assert added.returncode == 0, added.stderr
    response = chat(daemon, f"{name}/some-model")
    assert response.status_code == 502
    assert response.json()["error"] == {
        "message": f"Cannot reach the provider '{name}': {message}",
        "type": "server_error",
        "param": None,
        "code": "upstream_unreachable",
    }
    tested = daemon.cli("cloud", "test", name)
    assert tested.returncode == 1 and "Traceback" not in tested.stderr
    assert tested.stderr.strip() == f"Error: Cannot reach the provider '{name}': {message}"
    assert daemon.cli("cloud", "rm", name).returncode == 0


PORTAL = (
    "The provider 'fake' answered with a web page instead of data (HTTP {status}): a captive "
    "portal or proxy login page? Sign in to the network in a browser, then try again."
)


@pytest.mark.parametrize(("fault", "status"), [("html", 200), ("302", 302)])
@pytest.mark.parametrize("stream", [False, True])
def test_a_captive_portal_page_is_a_502_in_each_protocols_shape(
    daemon: DaemonProcess, cloud: FakeCloud, fault: str, status: int, stream: bool
) -> None:
    message = PORTAL.format(status=status)
    messages = [{"role": "user", "content": "Hi"}]
    cloud.script.append(fault)
    openai_answer = chat(daemon, "fake/gpt-test", stream=stream)
    assert openai_answer.status_code == 502
    assert openai_answer.json()["error"]["message"] == message
    assert openai_answer.json()["error"]["code"] == "upstream_bad_response"
    cloud.script.append(fault)
    anthropic_answer = httpx.post(
        f"{daemon.url}/v1/messages",
        headers=daemon.headers(),
        json={"model": "fake/gpt-test", "max_tokens": 8, "messages": messages, "stream": stream},
        timeout=30,
    )
    assert anthropic_answer.status_code == 502
    assert anthropic_answer.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": message},
    }
    cloud.script.append(fault)
    ollama_answer = httpx.post(
        f"{daemon.url}/api/chat",
        headers=daemon.headers(),
        json={"model": "fake/gpt-test", "messages": messages, "stream": stream},
        timeout=30,
    )
    assert ollama_answer.status_code == 502 and ollama_answer.json() == {"error": message}


def cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``localserve`` in this test's own home, where no daemon runs."""
    return run_cli(*args, input=input, timeout=60)


@pytest.fixture
def flaky() -> Iterator[FakeCloud]:
    """A provider only this test's CLI knows (no daemon refreshes its model list)."""
    with FakeCloud() as fake:
        added = cli(
            "cloud",
            "add",
            "flaky",
            "--base-url",
            fake.base_url,
            "--key-from-stdin",
            input=fake.key + "\n",
        )
        assert added.returncode == 0, added.stderr
        yield fake


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("html", PORTAL.format(status=200).replace("'fake'", "'flaky'")),
        (
            "503",
            "The provider 'flaky' is failing (HTTP 503: Fault 503 on purpose); try again later.",
        ),
        ("429:60", "The provider 'flaky' is limiting requests (HTTP 429); try again in 60 s."),
        ("hang", "The provider 'flaky' did not answer within 1 s (slow or no network)."),
    ],
    ids=["captive-portal", "5xx", "429", "slow"],
)
def test_cloud_test_says_what_is_wrong(flaky: FakeCloud, fault: str, message: str) -> None:
    flaky.get_script.append(fault)
    flaky.hang_seconds = 3
    tested = cli("cloud", "test", "flaky", "--timeout", "1")
    assert tested.returncode == 1 and "Traceback" not in tested.stderr
    assert tested.stderr.strip() == f"Error: {message}"


def test_cloud_test_lists_the_models_or_says_the_key_is_refused(flaky: FakeCloud) -> None:
    works = cli("cloud", "test", "flaky")
    assert works.returncode == 0, works.stderr
    assert works.stdout.splitlines()[0] == "flaky works: 3 models."
    assert "  flaky/gpt-test" in works.stdout.splitlines()
    url = flaky.base_url
    cli("cloud", "add", "wrongkey", "--base-url", url, "--key-from-stdin", input="sk-wrong\n")
    refused = cli("cloud", "test", "wrongkey")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: wrongkey refused the key (HTTP 401: Incorrect API key provided.); set it again "
        f"with `localserve cloud add wrongkey --base-url {url}`."
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/v1", "not an http(s) URL"),
        ("https://user:pw@example.com/v1", "not in the URL"),
    ],
)
def test_bad_base_urls_are_refused(daemon: DaemonProcess, url: str, message: str) -> None:
    result = daemon.cli("cloud", "add", "bad", "--base-url", url)
    assert result.returncode == 1 and message in result.stderr


def test_the_daemon_itself_is_refused_as_a_provider(daemon: DaemonProcess) -> None:
    url = f"http://127.0.0.1:{daemon.state['port']}/v1"
    result = daemon.cli("cloud", "add", "self", "--base-url", url)
    assert result.returncode == 1 and "loop" in result.stderr


def test_plain_http_to_another_machine_warns(daemon: DaemonProcess) -> None:
    result = daemon.cli("cloud", "add", "lan", "--base-url", "http://192.0.2.10:8000/v1")
    assert result.returncode == 0 and "plain http" in result.stderr
    assert daemon.cli("cloud", "rm", "lan").returncode == 0


def test_a_model_too_large_is_forwarded_only_when_mapped_and_allowed(
    daemon: DaemonProcess, cloud: FakeCloud
) -> None:
    assert (
        daemon.cli("models", "import", str(starter_path()), "--link", "--name", "huge").returncode
        == 0
    )
    record_file = daemon.home / "data" / "models" / "huge" / "model.json"
    record = json.loads(record_file.read_text())
    record["size_bytes"] = 10 * 2**40
    record_file.write_text(json.dumps(record))

    refused = chat(daemon, "huge")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_too_large"
    assert daemon.cli("cloud", "map", "huge", "fake/gpt-big").returncode == 0
    forwarded = chat(daemon, "huge")
    assert forwarded.status_code == 200, forwarded.text
    assert forwarded.headers["x-localserve-backend"] == "fake"
    sent = last_post(cloud).body
    assert sent is not None and sent["model"] == "gpt-big"

    assert daemon.cli("cloud", "local-only", "on").returncode == 0
    try:
        for model in ("huge", "fake/gpt-test"):
            blocked = chat(daemon, model)
            assert blocked.status_code == 403
            error = blocked.json()["error"]
            assert error["code"] == "forwarding_not_allowed" and "local-only" in error["message"]
        assert chat(daemon, STARTER_MODEL, max_tokens=4).status_code == 200
    finally:
        assert daemon.cli("cloud", "local-only", "off").returncode == 0
    assert chat(daemon, "huge").status_code == 200


def test_a_mapped_model_that_is_not_installed_goes_to_the_cloud(
    daemon: DaemonProcess, cloud: FakeCloud
) -> None:
    assert daemon.cli("cloud", "map", "Meta-Llama-3.1-405B", "fake/gpt-big").returncode == 0
    response = chat(daemon, "meta-llama-3.1-405b")
    assert response.status_code == 200 and response.headers["x-localserve-backend"] == "fake"


def test_usage_is_ledgered_with_cost(daemon: DaemonProcess) -> None:
    priced = daemon.cli(
        "cloud", "price", "fake", "gpt-priced", "--prompt", "1000", "--completion", "2000"
    )
    assert priced.returncode == 0, priced.stderr
    for _ in range(2):
        assert chat(daemon, "fake/gpt-priced").status_code == 200
    streamed = list(
        daemon.openai().chat.completions.create(
            model="fake/gpt-priced", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert streamed
    usage = daemon.cli("cloud", "usage")
    assert usage.returncode == 0, usage.stderr
    rows = {row.split()[0]: row.split()[1:] for row in usage.stdout.splitlines()[1:]}
    # Three requests of 11 prompt and 5 output tokens (the streamed one counted from the usage
    # chunk we asked upstream for), at 1000 and 2000 per million tokens.
    assert rows["fake/gpt-priced"] == ["3", "33", "15", f"{3 * (11 * 1000 + 5 * 2000) / 1e6:.4f}"]
    assert rows["fake/gpt-test"][3] == "-"  # no price configured: no cost shown


def test_a_model_that_fails_to_load_falls_back_only_where_allowed(
    daemon: DaemonProcess, cloud: FakeCloud, tmp_path: Path
) -> None:
    """A file whose header is sound but whose architecture llama.cpp refuses."""
    broken = unknown_architecture_copy(tmp_path / "broken.gguf")
    imported = daemon.cli("models", "import", str(broken), "--link", "--name", "broken")
    assert imported.returncode == 0, imported.stderr
    assert daemon.cli("cloud", "map", "broken", "fake/gpt-test").returncode == 0
    failed = chat(daemon, "broken")
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "model_load_failed"

    cloud.add_to(daemon, "fallback", "--allow-fallback")
    assert daemon.cli("cloud", "map", "broken", "fallback/gpt-test").returncode == 0
    served = chat(daemon, "broken")
    assert served.status_code == 200, served.text
    assert served.headers["x-localserve-backend"] == "fallback"


def last_post(cloud: FakeCloud) -> Received:
    """The latest request that was not the daemon refreshing the provider's model list."""
    return [sent for sent in cloud.received if sent.path != "/v1/models"][-1]


def test_responses_reach_a_provider_that_speaks_them_as_they_are(
    daemon: DaemonProcess, cloud: FakeCloud
) -> None:
    cloud.add_to(daemon, "fakeresp", "--responses-api")
    sdk = daemon.openai()
    response = sdk.responses.create(model="fakeresp/gpt-test", input="Hi", instructions="Brief.")
    assert response.output_text == "".join(CHUNKS)
    sent = last_post(cloud)
    assert sent.path == "/v1/responses" and sent.body is not None
    assert sent.body["model"] == "gpt-test" and sent.body["input"] == "Hi"
    assert sent.body["instructions"] == "Brief." and "stream_options" not in sent.body

    events = list(sdk.responses.create(model="fakeresp/gpt-test", input="Hi", stream=True))
    assert events[-1].type == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "".join(CHUNKS)

    # A provider that does not speak them gets the request as a chat completion.
    translated = sdk.responses.create(model="fake/gpt-test", input="Hi")
    assert translated.output_text == "".join(CHUNKS)
    assert last_post(cloud).path == "/v1/chat/completions"

    usage = daemon.cli("cloud", "usage")
    rows = {row.split()[0]: row.split()[1:] for row in usage.stdout.splitlines()[1:]}
    assert rows["fakeresp/gpt-test"][:3] == ["2", "14", "10"]  # whole and streamed, counted
    listed = daemon.cli("cloud", "list").stdout
    assert "Responses API" in next(line for line in listed.splitlines() if "fakeresp" in line)


def test_the_local_engines_fields_do_not_reach_a_provider(
    daemon: DaemonProcess, cloud: FakeCloud
) -> None:
    local_only = {"enable_thinking": False, "thinking_budget_tokens": 9, "reasoning_format": "none"}
    assert chat(daemon, "fake/gpt-test", keep_alive="5m", **local_only).status_code == 200
    sent = last_post(cloud).body
    assert sent is not None and sent["messages"]
    assert not set(sent) & {"keep_alive", *local_only}
    # An Anthropic request without thinking asks a local model not to think: a cloud model
    # that does not reason would refuse reasoning_effort, so nothing of it is sent.
    with anthropic.Anthropic(base_url=daemon.url, api_key=daemon.admin_key, max_retries=0) as sdk:
        message = sdk.messages.create(model="fake/gpt-test", max_tokens=20, messages=HI)
    assert message.content[0].type == "text"
    sent = last_post(cloud).body
    assert sent is not None and "reasoning_effort" not in sent and "enable_thinking" not in sent


def test_images_reach_a_provider_as_they_came(daemon: DaemonProcess, cloud: FakeCloud) -> None:
    """The provider fetches image URLs under its own rules: localserve neither fetches a
    cloud request's images nor refuses a private-looking URL it will never open."""
    image = "http://10.0.0.7/cat.png"
    inline = "data:image/png;base64,iVBORw0KGgo="
    content = [
        {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": inline}},
        {"type": "text", "text": "What is this?"},
    ]
    reply = chat(daemon, "fake/gpt-test", messages=[{"role": "user", "content": content}])
    assert reply.status_code == 200, reply.text
    sent = last_post(cloud).body
    assert sent is not None
    parts = sent["messages"][0]["content"]
    assert [part["image_url"]["url"] for part in parts[:2]] == [image, inline]
    assert parts[0]["image_url"]["detail"] == "low" and parts[2]["text"] == "What is this?"
