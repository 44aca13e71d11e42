"""The check behind `localserve cloud test` and the tray's Test button, against the fake
provider on loopback: the verdict, or one line saying what is wrong."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from localserve.cloud.providers import Provider
from localserve.errors import ConfigError, UpstreamError
from localserve.router.provider_check import check_provider
from tests.helpers.fake_cloud import MODELS, FakeCloud

ADVICE = "set it again somehow"


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud() as fake:
        yield fake


def test_a_provider_that_takes_the_key_lists_its_models(cloud: FakeCloud) -> None:
    checked = check_provider(Provider("p", cloud.base_url), cloud.key, ADVICE)
    assert checked.models == MODELS
    assert checked.verdict() == "p works: 3 models."


def test_a_refused_key_ends_with_the_callers_advice(cloud: FakeCloud) -> None:
    with pytest.raises(ConfigError) as refused:
        check_provider(Provider("p", cloud.base_url), "sk-wrong", ADVICE)
    assert str(refused.value) == (
        "p refused the key (HTTP 401: Incorrect API key provided.); set it again somehow."
    )


def test_a_captive_portal_and_a_failing_provider_are_said_so(cloud: FakeCloud) -> None:
    provider = Provider("p", cloud.base_url)
    cloud.get_script.append("html")
    with pytest.raises(UpstreamError, match=r"answered with a web page instead of data"):
        check_provider(provider, cloud.key, ADVICE)
    cloud.get_script.append("503")
    with pytest.raises(UpstreamError) as failing:
        check_provider(provider, cloud.key, ADVICE)
    assert str(failing.value) == (
        "The provider 'p' is failing (HTTP 503: Fault 503 on purpose); try again later."
    )


def test_nothing_listening_is_said_in_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UpstreamError) as unreachable:
        check_provider(Provider("p", f"http://127.0.0.1:{port}/v1"), None, ADVICE, timeout=2)
    assert str(unreachable.value) == (
        "Cannot reach the provider 'p': 127.0.0.1 refused the connection."
    )
