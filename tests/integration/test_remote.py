"""Remote access over real TLS on loopback: the "remote" listener binds 127.0.0.2 and clients
connect from other 127.0.0.x source addresses, so each test has its own address as far as the
brute-force limiter is concerned."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from localserve.api.control import RemoteStatus
from localserve.security.tls import fingerprint_of
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

REMOTE_ADDRESS = "127.0.0.2"
CHAT = {"model": STARTER_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    env = {
        "LOCALSERVE_REMOTE_AUTH_FAILURES": "4",
        "LOCALSERVE_REMOTE_LOCKOUT": "2",
        "LOCALSERVE_REMOTE_MAX_CONCURRENT_PER_KEY": "1",
        "LOCALSERVE_REMOTE_MAX_BODY_BYTES": "4096",
    }
    with DaemonProcess(tmp_path_factory.mktemp("remote-daemon"), env=env) as running:
        running.wait_until_model("ready")
        turned_on = running.cli("remote", "on", "--interface", REMOTE_ADDRESS, "--port", "0")
        assert turned_on.returncode == 0, turned_on.stderr
        assert "Remote access is on at https://127.0.0.2:" in turned_on.stdout
        yield running


@pytest.fixture(scope="module")
def remote(daemon: DaemonProcess) -> RemoteStatus:
    status = daemon.answer(RemoteStatus, "GET", "/remote")
    assert status.enabled and status.address == REMOTE_ADDRESS
    return status


@pytest.fixture(scope="module")
def phone_key(daemon: DaemonProcess) -> str:
    return daemon.cli("key", "add", "phone").stdout.strip()


def pinned_context(remote: RemoteStatus) -> ssl.SSLContext:
    """What a careful client does: fetch the certificate, compare its fingerprint with the one
    `remote status` showed, then trust exactly that certificate."""
    assert remote.address is not None and remote.port is not None
    pem = ssl.get_server_certificate((remote.address, remote.port))
    assert fingerprint_of(ssl.PEM_cert_to_DER_cert(pem)) == remote.fingerprint
    return ssl.create_default_context(cadata=pem)


def client_from(remote: RemoteStatus, source: str, **kwargs: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source, verify=pinned_context(remote))
    url = f"https://{remote.address}:{remote.port}"
    return httpx.Client(base_url=url, transport=transport, timeout=30, **kwargs)


def read_audit(daemon: DaemonProcess, ready: Callable[[list[str]], bool]) -> list[str]:
    """The audit log's lines, once ``ready`` (the entry is written after the response ends)."""
    path = daemon.home / "logs" / "remote-audit.log"
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if ready(lines):
            break
        time.sleep(0.05)
    return lines


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_a_pinned_client_with_a_device_key_is_served(
    daemon: DaemonProcess, remote: RemoteStatus, phone_key: str
) -> None:
    with client_from(remote, "127.0.0.3") as http:
        sdk = OpenAI(base_url=remote.url, api_key=phone_key, http_client=http)
        reply = sdk.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert reply.choices[0].message.content
    audit = read_audit(daemon, lambda lines: any('"/v1/chat/completions"' in x for x in lines))
    entry = json.loads(next(x for x in reversed(audit) if '"/v1/chat/completions"' in x))
    assert entry["key"] == "phone" and entry["path"] == "/v1/chat/completions"
    assert entry["status"] == 200 and entry["address"] == "127.0.0.3"
    assert entry["tokens"]["completion_tokens"] == reply.usage.completion_tokens  # type: ignore[union-attr]
    assert phone_key not in "\n".join(audit)


def test_ollama_and_anthropic_clients_are_served_remotely(
    remote: RemoteStatus, phone_key: str
) -> None:
    """Phone apps often speak Ollama's API: it is served remotely too, but pulling and deleting
    models (admin work) are not."""
    with client_from(remote, "127.0.0.12") as http:
        chat = http.post(
            "/api/chat",
            headers=bearer(phone_key),
            json={
                "model": STARTER_MODEL,
                "stream": False,
                "messages": [{"role": "user", "content": "Hi"}],
                "options": {"num_predict": 4},
            },
        )
        message = http.post(
            "/v1/messages",
            headers={"x-api-key": phone_key},
            json={
                "model": STARTER_MODEL,
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        )
        pull = http.post("/api/pull", headers=bearer(phone_key), json={"model": "x/y"})
    assert chat.status_code == 200 and chat.json()["message"]["content"]
    assert message.status_code == 200, message.text
    assert message.json()["content"][0]["text"]
    assert pull.status_code == 403 and "admin key" in pull.json()["error"]


def test_the_certificate_names_the_address_and_its_key_is_private(
    daemon: DaemonProcess, remote: RemoteStatus
) -> None:
    assert (daemon.home / "config" / "remote-key.pem").stat().st_mode & 0o777 == 0o600
    status = daemon.cli("remote", "status")
    assert remote.fingerprint is not None
    assert remote.fingerprint in status.stdout and "self-signed" in status.stdout
    with pytest.raises(httpx.ConnectError):  # an unpinned client refuses the self-signed cert
        httpx.get(f"https://{REMOTE_ADDRESS}:{remote.port}/health", timeout=5)


def test_plain_http_to_the_remote_port_gets_nothing(remote: RemoteStatus) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{REMOTE_ADDRESS}:{remote.port}/v1/models", timeout=5)


@pytest.mark.parametrize("who", ["no key", "admin key", "revoked key"])
def test_remote_requests_need_a_valid_client_key(
    daemon: DaemonProcess, remote: RemoteStatus, who: str
) -> None:
    headers: dict[str, str] = {}
    if who == "admin key":
        headers = bearer(daemon.admin_key)
    elif who == "revoked key":
        key = daemon.cli("key", "add", "old-laptop").stdout.strip()
        with client_from(remote, "127.0.0.6") as http:
            assert http.get("/v1/models", headers=bearer(key)).status_code == 200
        assert daemon.cli("key", "revoke", "old-laptop").returncode == 0
        headers = bearer(key)
    with client_from(remote, "127.0.0.6") as http:
        response = http.get("/v1/models", headers=headers)
    assert response.status_code == 401
    if who == "admin key":
        assert "not accepted remotely" in response.json()["error"]["message"]
    with client_from(remote, "127.0.0.6") as http:  # a success clears this address' failures
        daemon_key = daemon.cli("key", "add", f"ok-{who.split()[0]}").stdout.strip()
        assert http.get("/v1/models", headers=bearer(daemon_key)).status_code == 200


def test_repeated_bad_keys_lock_the_address_out_for_a_while(
    remote: RemoteStatus, phone_key: str
) -> None:
    with client_from(remote, "127.0.0.4") as attacker, client_from(remote, "127.0.0.5") as other:
        statuses = [
            attacker.get("/v1/models", headers=bearer(f"lsk-guess-{n}")).status_code
            for n in range(4)
        ]
        assert statuses == [401, 401, 401, 401]
        locked = attacker.get("/v1/models", headers=bearer(phone_key))
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
        assert other.get("/v1/models", headers=bearer(phone_key)).status_code == 200
        time.sleep(2.2)
        assert attacker.get("/v1/models", headers=bearer(phone_key)).status_code == 200


def test_a_foreign_host_header_is_refused(remote: RemoteStatus, phone_key: str) -> None:
    with client_from(remote, "127.0.0.7") as http:
        response = http.get("/v1/models", headers={**bearer(phone_key), "host": "evil.example"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("path", ["/localserve/v1/status", "/localserve/v1/models", "/metrics"])
def test_the_control_api_is_not_reachable_remotely(
    daemon: DaemonProcess, remote: RemoteStatus, path: str
) -> None:
    with client_from(remote, "127.0.0.8") as http:
        assert http.get(path, headers=bearer(daemon.admin_key)).status_code == 404


def test_remote_limits_body_size_and_concurrency_per_key(
    remote: RemoteStatus, phone_key: str
) -> None:
    with client_from(remote, "127.0.0.9") as http:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 8000}]}
        assert (
            http.post("/v1/chat/completions", json=big, headers=bearer(phone_key)).status_code
            == 413
        )
        stream_body = {**CHAT, "max_tokens": 200, "stream": True}
        with http.stream(
            "POST", "/v1/chat/completions", json=stream_body, headers=bearer(phone_key)
        ) as streaming:
            assert streaming.status_code == 200
            second = http.post("/v1/chat/completions", json=CHAT, headers=bearer(phone_key))
            assert second.status_code == 429
            assert second.json()["error"]["code"] == "too_many_concurrent_requests"
            for _ in streaming.iter_bytes():
                pass
        # The slot is freed before the stream's last byte goes out, so requests sent as soon as
        # the previous answer arrives are served, whichever header carries the key.
        for headers in [bearer(phone_key), {"x-api-key": phone_key}] * 5:
            assert http.get("/v1/models", headers=headers).status_code == 200
        assert http.post("/v1/chat/completions", json=CHAT, headers=bearer(phone_key)).is_success


def test_turning_remote_off_closes_the_listener(
    daemon: DaemonProcess, remote: RemoteStatus, phone_key: str
) -> None:
    off = daemon.cli("remote", "off")
    assert off.returncode == 0, off.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://{REMOTE_ADDRESS}:{remote.port}/health", verify=False, timeout=5)
    assert "off" in daemon.cli("remote", "status").stdout
    assert daemon.control("GET", "/remote").json()["enabled"] is False
    # Local serving is untouched.
    local = httpx.post(f"{daemon.base_url}/chat/completions", json=CHAT, headers=daemon.headers())
    assert local.status_code == 200


def test_remote_access_over_ipv6(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with DaemonProcess(tmp_path_factory.mktemp("remote-v6")) as daemon:
        daemon.wait_until_model("ready")
        on = daemon.cli("remote", "on", "--interface", "::1", "--port", "0")
        assert on.returncode == 0, on.stderr
        status = daemon.answer(RemoteStatus, "GET", "/remote")
        assert status.url is not None and status.port is not None
        assert status.url.startswith("https://[::1]:")
        key = daemon.cli("key", "add", "v6").stdout.strip()
        pem = ssl.get_server_certificate(("::1", status.port))
        assert fingerprint_of(ssl.PEM_cert_to_DER_cert(pem)) == status.fingerprint
        context = ssl.create_default_context(cadata=pem)
        response = httpx.get(f"{status.url}/models", headers=bearer(key), verify=context)
        assert response.status_code == 200 and response.json()["data"]
