"""Bad input over raw HTTP: each gets OpenAI's error JSON and the right status; nothing breaks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from localserve.config.settings import LimitSettings
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

HELLO = [{"role": "user", "content": "hello"}]


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture(scope="module")
def http(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.base_url, headers=daemon.headers(), timeout=60) as client:
        yield client


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions",
        content=b'{"model": "x", ',
        headers={"content-type": "application/json"},
    )
    assert_openai_error(response, 400, "invalid_json")


def test_non_object_json_is_400(http: httpx.Client) -> None:
    assert_openai_error(http.post("/chat/completions", json=[1, 2]), 400, "invalid_json")


def test_schema_violation_names_the_parameter(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions", json={"model": STARTER_MODEL, "messages": HELLO, "temperature": 9}
    )
    assert assert_openai_error(response, 400)["param"] == "temperature"


# MiB: one more than the default limit
OVER_LIMIT = LimitSettings.model_fields["max_body_bytes"].default // (1024 * 1024) + 1


def test_body_over_limit_is_413(http: httpx.Client) -> None:
    big = b'{"model": "' + b"x" * (OVER_LIMIT * 1024 * 1024) + b'"}'
    assert_openai_error(http.post("/chat/completions", content=big), 413, "request_too_large")


def test_chunked_body_over_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(OVER_LIMIT + 1):
            yield b"x" * (1024 * 1024)

    response = http.post("/chat/completions", content=chunks())
    assert_openai_error(response, 413, "request_too_large")


def test_unknown_model_is_404(http: httpx.Client) -> None:
    response = http.post("/chat/completions", json={"model": "gpt-17", "messages": HELLO})
    error = assert_openai_error(response, 404, "model_not_found")
    assert STARTER_MODEL in error["message"]
    assert_openai_error(http.get("/models/gpt-17"), 404, "model_not_found")


def test_prompt_plus_max_tokens_over_context_is_400_with_both_numbers(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions", json={"model": STARTER_MODEL, "messages": HELLO, "max_tokens": 5000}
    )
    error = assert_openai_error(response, 400, "context_length_exceeded")
    assert "4096" in error["message"] and "5000" in error["message"]


def test_prompt_alone_over_context_is_400(http: httpx.Client) -> None:
    long_prompt = "word " * 5000
    response = http.post(
        "/completions", json={"model": STARTER_MODEL, "prompt": long_prompt, "max_tokens": 1}
    )
    error = assert_openai_error(response, 400, "context_length_exceeded")
    assert "4096" in error["message"]


def test_suffix_without_fim_tokens_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/completions", json={"model": STARTER_MODEL, "prompt": "def f(", "suffix": "\n"}
    )
    assert assert_openai_error(response, 400, "unsupported_feature")["param"] == "suffix"


def test_several_choices_are_refused(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions", json={"model": STARTER_MODEL, "messages": HELLO, "n": 2}
    )
    assert assert_openai_error(response, 400)["param"] == "n"


def test_bad_json_schema_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions",
        json={
            "model": STARTER_MODEL,
            "messages": HELLO,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
        },
    )
    assert assert_openai_error(response, 400)["param"] == "response_format"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"x-api-key": "wrong-key"},
        {"Authorization": "Basic abc"},
    ],
)
def test_missing_or_wrong_key_is_401_with_www_authenticate(
    daemon: DaemonProcess, headers: dict[str, str]
) -> None:
    response = httpx.post(
        f"{daemon.base_url}/chat/completions",
        headers=headers,
        json={"model": STARTER_MODEL, "messages": HELLO},
    )
    assert_openai_error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_openai_error(httpx.get(f"{daemon.base_url}/models", headers=headers), 401)


def test_x_api_key_header_is_accepted(daemon: DaemonProcess) -> None:
    response = httpx.get(f"{daemon.base_url}/models", headers={"x-api-key": daemon.admin_key})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "192.168.1.10", "localhost.evil.example"]
)
def test_foreign_host_header_is_403(daemon: DaemonProcess, host: str) -> None:
    response = httpx.get(f"{daemon.base_url}/models", headers={**daemon.headers(), "Host": host})
    assert_openai_error(response, 403, "host_not_allowed")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:1234", "[::1]:80", "LOCALHOST"])
def test_loopback_host_names_are_allowed(daemon: DaemonProcess, host: str) -> None:
    response = httpx.get(f"{daemon.base_url}/models", headers={**daemon.headers(), "Host": host})
    assert response.status_code == 200


def test_no_cors_headers_by_default(daemon: DaemonProcess) -> None:
    response = httpx.options(
        f"{daemon.base_url}/chat/completions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert not any(name.lower().startswith("access-control-") for name in response.headers)
    get = httpx.get(
        f"{daemon.base_url}/models", headers={**daemon.headers(), "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in get.headers


def test_health_needs_no_key_and_says_nothing_more(daemon: DaemonProcess) -> None:
    response = httpx.get(f"{daemon.url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    for path in ("/openapi.json", "/docs", "/redoc"):  # no schema for anyone without a key
        assert_openai_error(httpx.get(f"{daemon.url}{path}"), 404)


def test_control_api_needs_the_admin_key(daemon: DaemonProcess) -> None:
    client_key = daemon.cli("key", "add", "status-probe").stdout.strip()
    response = httpx.get(
        f"{daemon.url}/localserve/v1/status", headers={"Authorization": f"Bearer {client_key}"}
    )
    assert_openai_error(response, 403, "admin_key_required")
    assert_openai_error(httpx.get(f"{daemon.url}/localserve/v1/status"), 401)


def test_server_still_serves_after_all_that(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions", json={"model": STARTER_MODEL, "messages": HELLO, "max_tokens": 3}
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] >= 1


def test_empty_prompt_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/completions", json={"model": STARTER_MODEL, "prompt": "", "max_tokens": 4}
    )
    assert assert_openai_error(response, 400)["param"] == "prompt"
