"""Per-model presets on a real daemon: applied when the model loads (context, KV-cache type),
to each request (system prompt, stop strings) with the request's own fields winning, shown by
/api/show, and changed with `localserve models set` while serving (reloaded once idle)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

PRESET = f"""
[models."{STARTER_MODEL}"]
ctx = 2048
cache_type_k = "q8_0"
cache_type_v = "q8_0"
system = "You are a pirate."
stop = ["e"]
"""
HI = [{"role": "user", "content": "Write three short lines about the sea."}]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    home = tmp_path_factory.mktemp("presets")
    running = DaemonProcess(home)
    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(PRESET)
    with running:
        running.wait_until_model("ready")
        yield running


def chat(daemon: DaemonProcess, messages: list[dict[str, str]], **fields: object) -> dict:
    response = httpx.post(
        f"{daemon.base_url}/chat/completions",
        headers=daemon.headers(),
        json={"model": STARTER_MODEL, "messages": messages, "max_tokens": 40, **fields},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


def test_engine_keys_apply_when_the_model_loads(daemon: DaemonProcess) -> None:
    info = daemon.model_status().info
    assert info is not None
    assert info.n_ctx == 2048  # the preset's, not the global 4096
    assert info.kv_bytes_per_cell < 30 * 2 * 576 * 2  # q8_0: under the f16 cache's bytes


def test_request_fields_win_over_the_preset_and_the_preset_over_the_defaults(
    daemon: DaemonProcess,
) -> None:
    with_preset = chat(daemon, HI, temperature=0)
    own_system = chat(daemon, [{"role": "system", "content": "Hi."}, *HI], temperature=0)
    # The preset's system prompt is in the first prompt; the request's own replaced it.
    assert with_preset["usage"]["prompt_tokens"] > own_system["usage"]["prompt_tokens"]
    # The preset's stop string ("e", which any English answer soon writes) ends the answer...
    assert "e" not in with_preset["choices"][0]["message"]["content"]
    assert with_preset["choices"][0]["finish_reason"] == "stop"
    # ...and a request's own stop list replaces it.
    longer = chat(daemon, HI, temperature=0, stop=["zzz"], max_tokens=60)
    assert "e" in longer["choices"][0]["message"]["content"]


def test_ollama_show_reports_the_preset(daemon: DaemonProcess) -> None:
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        shown = sdk.show(STARTER_MODEL)
    assert shown.parameters is not None
    assert "num_ctx" in shown.parameters and "2048" in shown.parameters
    assert 'stop                           "e"' in shown.parameters
    raw = httpx.post(
        f"{daemon.url}/api/show", headers=daemon.headers(), json={"model": STARTER_MODEL}
    ).json()
    assert raw["system"] == "You are a pirate."


def test_the_fit_verdict_uses_the_presets_context(daemon: DaemonProcess) -> None:
    models = daemon.control("GET", "/models").json()["data"]
    starter = next((m for m in models if m["name"] == STARTER_MODEL), None)
    if starter is None:
        pytest.skip("the starter is not listed in this library")
    assert starter["fit"]["context_length"] == 2048


def test_models_set_while_serving_reloads_once_idle(daemon: DaemonProcess) -> None:
    pid = daemon.model_status().pid
    changed = daemon.cli("models", "set", STARTER_MODEL, "ctx=1024", "temperature=0.1")
    assert changed.returncode == 0, changed.stderr
    assert "Changed: ctx, temperature." in changed.stdout and "reloads" in changed.stdout
    assert "ctx = 1024" in changed.stdout
    config = (daemon.home / "config" / "config.toml").read_text()
    assert "ctx = 1024" in config and "temperature = 0.1" in config and "system" in config
    daemon.wait_until_model("unloaded", timeout=30)  # idle: unloaded to reload
    chat(daemon, HI)
    status = daemon.wait_until_model("ready")
    assert status.pid != pid and status.info is not None and status.info.n_ctx == 1024
    # A request key alone applies to the next request, without a reload.
    again = daemon.cli("models", "set", STARTER_MODEL, "temperature=")
    assert again.returncode == 0 and "reloads" not in again.stdout
    time.sleep(1.0)
    assert daemon.model_status().state == "ready"


def test_a_bad_value_is_one_line_and_changes_nothing(daemon: DaemonProcess) -> None:
    config = daemon.home / "config" / "config.toml"
    before = config.read_text()
    refused = daemon.cli("models", "set", STARTER_MODEL, "temperature=7")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ") and len(refused.stderr.strip().splitlines()) == 1
    assert config.read_text() == before
    unknown = daemon.cli("models", "set", "no-such-model", "ctx=1")
    assert unknown.returncode == 1 and "no-such-model" in unknown.stderr
