"""Network faults sorted and said (``localserve.network``), the Hub's refusals as our errors
(``hub.client.refusal``), the retry policy, and the download's wait for a lost network.

Faults are real where they can be made in-process: a closed port, a name that never resolves,
a socket that accepts and says nothing. HTTP answers are httpx responses built here."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from localserve.errors import HubAccessError, HubUnreachableError, RepoNotFoundError
from localserve.hub.client import RetryPolicy, refusal
from localserve.hub.download import NetworkWait, PullCancelled
from localserve.network import (
    FaultKind,
    NetworkFault,
    fault_from_exception,
    fault_from_response,
)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fault_of(url: str, timeout: float = 2.0) -> NetworkFault:
    try:
        httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return fault_from_exception(exc, url, timeout)
    raise AssertionError(f"{url} answered")


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    request = httpx.Request("GET", "https://hub.example/api/models/org/repo")
    return httpx.Response(status, headers=headers, content=body, request=request)


def test_real_faults_are_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert fault_of("http://name.invalid/").kind is FaultKind.DNS
    assert fault_of(f"http://127.0.0.1:{closed_port()}/").kind is FaultKind.REFUSED
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        fault = fault_of(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.3)
    assert fault.kind is FaultKind.TIMEOUT and fault.transient
    assert fault.describe("the Hub") == "The Hub did not answer within 0.3 s (slow or no network)."
    proxy = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "")
    through_proxy = fault_of(f"http://127.0.0.1:{closed_port()}/")
    assert through_proxy.kind is FaultKind.PROXY and through_proxy.proxy == proxy


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (answer(503), FaultKind.SERVER),
        (answer(502, {"content-type": "text/html"}, b"<html>Bad gateway</html>"), FaultKind.SERVER),
        (answer(429, {"retry-after": "7"}), FaultKind.RATE_LIMITED),
        (answer(200, {"content-type": "text/html; charset=utf-8"}), FaultKind.WEB_PAGE),
        (answer(302, {"location": "http://portal/"}), FaultKind.WEB_PAGE),
        (answer(511), FaultKind.WEB_PAGE),
    ],
)
def test_unusable_answers_are_faults(response: httpx.Response, kind: FaultKind) -> None:
    fault = fault_from_response(response)
    assert fault is not None and fault.kind is kind and fault.host == "hub.example"


def test_answers_for_the_caller_are_not_faults() -> None:
    for status in (200, 206, 400, 401, 404):
        assert fault_from_response(answer(status, {"content-type": "application/json"})) is None


def test_a_rate_limit_says_when_to_come_back() -> None:
    fault = fault_from_response(answer(429, {"retry-after": "7"}))
    assert fault is not None and fault.retry_after == 7.0
    assert fault.describe("the Hub") == "The Hub is limiting requests (HTTP 429); try again in 7 s."


def test_the_hubs_refusals_become_our_errors() -> None:
    gated = refusal(answer(401, {"x-error-code": "GatedRepo"}), "org/repo")
    assert isinstance(gated, HubAccessError)
    assert str(gated) == (
        "'org/repo' is gated: accept its terms on huggingface.co, then run `localserve hub login`."
    )
    hidden = refusal(answer(401, {"x-error-code": "RepoNotFound"}), "org/repo")
    assert isinstance(hidden, RepoNotFoundError) and "if it is private" in str(hidden)
    forbidden = refusal(answer(403), "org/repo")
    assert isinstance(forbidden, HubAccessError) and "(HTTP 403)" in str(forbidden)
    missing_file = refusal(answer(404, {"x-error-code": "EntryNotFound"}), "org/repo")
    assert str(missing_file) == "A file was not found in 'org/repo'."
    assert refusal(answer(200), "org/repo") is None


def test_the_retry_policy_retries_only_what_passes_in_seconds() -> None:
    policy = RetryPolicy(attempts=3, first_wait_s=1.0, max_wait_s=8.0)
    server = NetworkFault(FaultKind.SERVER, "h", status=503)
    assert [policy.wait_before(n, server) for n in (1, 2, 3)] == [1.0, 2.0, None]
    short = NetworkFault(FaultKind.RATE_LIMITED, "h", status=429, retry_after=3)
    long = NetworkFault(FaultKind.RATE_LIMITED, "h", status=429, retry_after=60)
    assert policy.wait_before(1, short) == 3 and policy.wait_before(1, long) is None
    for kind in (FaultKind.DNS, FaultKind.REFUSED, FaultKind.TLS, FaultKind.TIMEOUT):
        assert policy.wait_before(1, NetworkFault(kind, "h")) is None


def test_network_wait_reports_once_gives_up_at_its_limit_and_wakes_on_cancel() -> None:
    lost = NetworkFault(FaultKind.DNS, "huggingface.co")
    changes: list[NetworkFault | None] = []
    wait = NetworkWait(1.5, None, changes.append)
    started = time.monotonic()
    wait.wait(lost, "m.gguf")  # 1 s
    wait.wait(lost, "m.gguf")  # the last 0.5 s up to the limit
    with pytest.raises(HubUnreachableError) as gave_up:
        wait.wait(lost, "m.gguf")
    assert 1.4 < time.monotonic() - started < 3
    assert changes == [lost]
    assert str(gave_up.value) == (
        "Cannot reach the Hugging Face Hub: huggingface.co does not resolve (no network?). "
        "Waited 1.5 s for the network (pull_network_wait). The partial download is kept: run the "
        "same pull again to resume."
    )
    wait.recovered()
    assert changes == [lost, None]
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(PullCancelled):
        NetworkWait(600, cancel, changes.append).wait(lost, "m.gguf")
    assert time.monotonic() - started < 1
    with pytest.raises(HubUnreachableError):  # 0: fail at once
        NetworkWait(0, None, changes.append).wait(lost, "m.gguf")
