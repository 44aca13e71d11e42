"""Offline and flaky networks, as a user meets them: every Hub fault is one clear line in the CLI
and an error in the protocol's own shape over HTTP (never a traceback or a 500); a download that
loses the network waits for it and resumes; serving never touches the network.

Real ``localserve`` subprocesses and daemons. The faults come from the fake Hub
(``FakeHub.script``, ``outage_until``, a self-signed HTTPS server), a closed port, a proxy on a
closed port and a name under ``.invalid``, which never resolves (RFC 6761).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localserve.api.control import PullSnapshot, PullState, StartedPull
from localserve.security.tls import make_self_signed
from tests.helpers.daemon_process import LOCALSERVE, STARTER_MODEL, DaemonProcess, run_cli
from tests.helpers.fake_cloud import FakeCloud
from tests.helpers.fake_hub import FakeHub
from tests.helpers.model_files import starter_path

REPO = "example/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
NOWHERE = "http://huggingface.invalid"
STILL_WORKS = " Installed models still work."
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without proxies (the tests set their own), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env.update(extra)
    return env


def cli(
    *args: str, env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, input=input)


def start_pull(env: dict[str, str], home: Path) -> tuple[subprocess.Popen[str], Path]:
    """``models pull REPO`` in the background, once its first bytes are in the ``.part``."""
    process = subprocess.Popen(
        [*LOCALSERVE, "models", "pull", REPO],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    part = home / "data" / "models" / "smollm2-135m-instruct-q4_1" / f"{FILE}.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 0):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    return process, part


def assert_one_line(result: subprocess.CompletedProcess[str], message: str) -> None:
    """The command failed with exactly ``message`` as its last line, and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"


@pytest.fixture(scope="module")
def starter_bytes() -> bytes:
    return starter_path().read_bytes()


@pytest.fixture
def hub(starter_bytes: bytes) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, {FILE: starter_bytes})
        yield fake


def hub_env(hub: FakeHub | str, home: Path, **extra: str) -> dict[str, str]:
    url = hub if isinstance(hub, str) else hub.url
    return clean_env(HF_ENDPOINT=url, HF_HOME=str(home / "hf"), **extra)


# -- no network at all -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        (
            NOWHERE,
            "Cannot reach the Hugging Face Hub: huggingface.invalid does not resolve (no "
            "network?).",
        ),
        ("closed", "Cannot reach the Hugging Face Hub: 127.0.0.1 refused the connection."),
    ],
    ids=["dns", "refused"],
)
def test_without_the_hub_every_hub_command_is_one_line_at_once(
    isolated_home: Path, endpoint: str, message: str
) -> None:
    url = f"http://127.0.0.1:{closed_port()}" if endpoint == "closed" else endpoint
    env = hub_env(url, isolated_home)
    for command in (
        ("models", "search", "qwen"),
        ("models", "files", REPO),
        ("models", "pull", REPO),
        ("hub", "login", "--token-from-stdin"),
    ):
        started = time.monotonic()
        result = cli(*command, env=env, input="hf_token\n")
        assert_one_line(result, message + STILL_WORKS)
        assert "retrying" not in result.stderr  # no network is not worth retrying
        assert time.monotonic() - started < 15, command


def test_an_unroutable_hub_fails_within_the_timeout(isolated_home: Path) -> None:
    """100::/64 is the IPv6 discard prefix (RFC 6666): depending on the machine's routes the
    kernel refuses it at once (no route) or the connection never opens (a timeout)."""
    env = hub_env("http://[100::1]", isolated_home, LOCALSERVE_HUB_TIMEOUT="2")
    started = time.monotonic()
    result = cli("models", "search", "qwen", env=env)
    assert time.monotonic() - started < 15
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() in {
        "Error: Cannot reach the Hugging Face Hub: no route to 100::1 (no network?)." + STILL_WORKS,
        "Error: The Hugging Face Hub did not answer within 2 s (slow or no network)." + STILL_WORKS,
    }


def test_hf_hub_offline_is_honoured(isolated_home: Path, hub: FakeHub) -> None:
    result = cli("models", "search", "smol", env=hub_env(hub, isolated_home, HF_HUB_OFFLINE="1"))
    assert_one_line(
        result,
        "HF_HUB_OFFLINE is set, so localserve does not contact the Hugging Face Hub; unset it to "
        "search or download." + STILL_WORKS,
    )
    assert hub.requests == []


def test_a_proxy_that_cannot_be_reached_is_named(isolated_home: Path, hub: FakeHub) -> None:
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = hub_env(hub, isolated_home, HTTP_PROXY=proxy, HTTPS_PROXY=proxy, NO_PROXY="")
    assert_one_line(
        cli("models", "search", "smol", env=env),
        f"Cannot reach the Hugging Face Hub through the proxy {proxy} (connection refused); "
        "check the HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment variables." + STILL_WORKS,
    )
    assert hub.requests == []


def test_an_untrusted_certificate_says_captive_portal(
    isolated_home: Path, tmp_path: Path, starter_bytes: bytes
) -> None:
    make_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with FakeHub(tls=context) as portal:
        portal.add_repo(REPO, {FILE: starter_bytes})
        result = cli("models", "files", REPO, env=hub_env(portal, isolated_home))
    assert_one_line(
        result,
        "Cannot reach the Hugging Face Hub securely: 127.0.0.1's certificate is not trusted "
        "(self-signed certificate). A captive portal or an intercepting proxy may be in the way: "
        "sign in to the network in a browser." + STILL_WORKS,
    )


# -- a Hub that answers badly ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("script", "message", "tries"),
    [
        (["503"] * 3, "The Hugging Face Hub is failing (HTTP 503); try again later.", 3),
        (
            ["429:60"],
            "The Hugging Face Hub is limiting requests (HTTP 429); try again in 60 s.",
            1,
        ),
        (
            ["html"],
            "The Hugging Face Hub answered with a web page instead of data (HTTP 200): a captive "
            "portal or proxy login page? Sign in to the network in a browser, then try again.",
            1,
        ),
        (
            ["drop"] * 3,
            "The connection to the Hugging Face Hub was lost before its answer was complete.",
            3,
        ),
        (["hang"], "The Hugging Face Hub did not answer within 1 s (slow or no network).", 1),
    ],
    ids=["5xx", "429-long", "captive-portal", "dropped", "timeout"],
)
def test_hub_faults_are_one_line_after_bounded_retries(
    isolated_home: Path, hub: FakeHub, script: list[str], message: str, tries: int
) -> None:
    hub.script.extend(script)
    hub.hang_seconds = 3
    env = hub_env(hub, isolated_home, LOCALSERVE_HUB_TIMEOUT="1")
    result = cli("models", "search", "smol", env=env)
    assert_one_line(result, message + STILL_WORKS)
    assert len(hub.requests) == tries
    retry_lines = [line for line in result.stderr.splitlines() if "retrying" in line]
    assert len(retry_lines) == (1 if tries > 1 else 0), result.stderr  # the reason once


def test_a_short_retry_after_is_waited_out(isolated_home: Path, hub: FakeHub) -> None:
    hub.script.append("429:1")
    started = time.monotonic()
    result = cli("models", "search", "smol", env=hub_env(hub, isolated_home))
    assert result.returncode == 0, result.stderr
    assert REPO in result.stdout and time.monotonic() - started >= 1.0
    assert result.stderr.strip() == (
        "The Hugging Face Hub: HTTP 429; retrying (up to 2 more tries)."
    )


def test_files_without_the_model_header_still_list_the_quants(
    isolated_home: Path, hub: FakeHub
) -> None:
    """The repo's file list arrives, the header prefix for the fit estimate does not."""
    hub.script.extend(["", "503"])  # the file list passes, the header's range request fails
    result = cli("models", "files", REPO, env=hub_env(hub, isolated_home))
    assert result.returncode == 0, result.stderr
    assert "Q4_1" in result.stdout and "unknown" in result.stdout
    assert result.stderr.strip() == (
        "No fit estimate: The Hugging Face Hub is failing (HTTP 503); try again later."
        + STILL_WORKS
    )


def test_gated_repos_say_how_to_get_access(
    isolated_home: Path, hub: FakeHub, starter_bytes: bytes
) -> None:
    hub.add_repo("org/Gated-GGUF", {FILE: starter_bytes}, gated=True)
    for command in (("models", "files", "org/Gated-GGUF"), ("models", "pull", "org/Gated-GGUF")):
        assert_one_line(
            cli(*command, env=hub_env(hub, isolated_home)),
            "'org/Gated-GGUF' is gated: accept its terms on huggingface.co, then run "
            "`localserve hub login`.",
        )


# -- downloads and the network -----------------------------------------------------------------
def test_a_pull_waits_for_the_network_and_resumes(
    isolated_home: Path, hub: FakeHub, starter_bytes: bytes
) -> None:
    hub.bytes_per_second = 40 * 2**20
    process, _ = start_pull(hub_env(hub, isolated_home), isolated_home)
    hub.outage_until = time.monotonic() + 3  # the network goes away for 3 s
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "waiting for the network: The connection to the Hugging Face Hub was lost" in out
    assert "Installed smollm2-135m-instruct-q4_1 (sha256 verified)." in out
    assert err.count("waiting up to 600 s for the network to come back") == 1
    resumed = [r for r in hub.requests if r[0] == "GET" and r[2] and r[2] != "bytes=0-"]
    assert resumed, hub.requests  # it went on from where it stopped, with a Range
    installed = isolated_home / "data" / "models" / "smollm2-135m-instruct-q4_1" / FILE
    assert installed.read_bytes() == starter_bytes


def test_a_pull_gives_up_after_the_wait_limit_and_keeps_the_part(
    isolated_home: Path, hub: FakeHub
) -> None:
    hub.bytes_per_second = 20 * 2**20
    env = hub_env(hub, isolated_home, LOCALSERVE_PULL_NETWORK_WAIT="2")
    process, part = start_pull(env, isolated_home)
    hub.outage_until = time.monotonic() + 600
    out, err = process.communicate(timeout=60)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert_one_line(
        result,
        "The connection to the Hugging Face Hub was lost before its answer was complete. "
        "Waited 2 s for the network (pull_network_wait). The partial download is kept: run the "
        "same pull again to resume.",
    )
    assert part.stat().st_size > 0


def test_ctrl_c_while_waiting_for_the_network_stops_at_once_and_keeps_the_part(
    isolated_home: Path, hub: FakeHub
) -> None:
    hub.bytes_per_second = 20 * 2**20
    process, part = start_pull(hub_env(hub, isolated_home), isolated_home)
    hub.outage_until = time.monotonic() + 600
    time.sleep(3)  # well into the wait
    kept = part.stat().st_size
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 2
    assert process.returncode == 130 and "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == (
        "Cancelled; the partial file is kept: run the same command to resume."
    )
    assert part.stat().st_size == kept > 0


# -- the daemon --------------------------------------------------------------------------------
@pytest.fixture
def offline_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    env = {"HF_ENDPOINT": NOWHERE, "HF_HOME": str(tmp_path / "hf")}
    with DaemonProcess(tmp_path / "home", env=env) as running:
        running.wait_until_model("ready")
        yield running


def test_the_daemon_answers_hub_faults_in_each_protocols_shape(
    offline_daemon: DaemonProcess,
) -> None:
    line = (
        "Cannot reach the Hugging Face Hub: huggingface.invalid does not resolve (no network?)."
        + STILL_WORKS
    )
    search = offline_daemon.control("GET", "/hub/search", params={"q": "qwen"})
    assert search.status_code == 502
    assert search.json()["error"] == {
        "message": line,
        "type": "server_error",
        "param": None,
        "code": "hub_unreachable",
    }
    for stream in (False, True):
        pulled = httpx.post(
            f"{offline_daemon.url}/api/pull",
            headers=offline_daemon.headers(),
            json={"model": f"hf.co/{REPO}", "stream": stream},
            timeout=30,
        )
        assert pulled.status_code == 502 and pulled.json() == {"error": line}
    through_cli = offline_daemon.cli("models", "pull", REPO)
    assert_one_line(through_cli, line)
    log = (offline_daemon.home / "logs" / "daemon.log").read_text()
    assert "Traceback" not in log and "Internal server error" not in log
    assert offline_daemon.chat().status_code == 200  # serving goes on


def test_a_pull_in_the_daemon_shows_waiting_for_network(tmp_path: Path, hub: FakeHub) -> None:
    hub.bytes_per_second = 40 * 2**20
    with hub.daemon(tmp_path / "home") as daemon:
        daemon.wait_until_model("ready")
        started = daemon.answer(StartedPull, "POST", "/pulls", json={"model": REPO})
        ollama_events: list[dict[str, object]] = []

        def follow_with_ollama() -> None:  # Ollama's /api/pull joins the same download
            with httpx.stream(
                "POST",
                f"{daemon.url}/api/pull",
                headers=daemon.headers(),
                json={"model": f"hf.co/{REPO}"},
                timeout=60,
            ) as response:
                ollama_events.extend(json.loads(line) for line in response.iter_lines() if line)

        follower = threading.Thread(target=follow_with_ollama)
        follower.start()
        while daemon.answer(PullSnapshot, "GET", f"/pulls/{started.id}").done_bytes == 0:
            time.sleep(0.05)
        hub.outage_until = time.monotonic() + 3
        states: list[tuple[str, str | None]] = []
        deadline = time.monotonic() + 60
        job: PullSnapshot = started
        while time.monotonic() < deadline:
            job = daemon.answer(PullSnapshot, "GET", f"/pulls/{started.id}")
            states.append((job.state.value, job.waiting_reason))
            if not job.active:
                break
            time.sleep(0.1)
        follower.join(timeout=30)
    lost = "The connection to the Hugging Face Hub was lost before its answer was complete."
    assert job.state is PullState.DONE, job
    assert ("waiting", lost) in states
    assert {"status": f"waiting for network: {lost}"} in ollama_events
    assert ollama_events[-1] == {"status": "success"}
    waiting_at = states.index(next(s for s in states if s[0] == "waiting"))
    assert ("running", None) in states[waiting_at:]  # bytes flowed again before it finished


def test_serving_never_touches_the_network(tmp_path: Path, hub: FakeHub) -> None:
    """Start-up, listing installed models and chatting contact neither the Hub nor a configured
    provider, and a proxy that does not work changes nothing on loopback."""
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "ALL_PROXY": proxy,
        "NO_PROXY": "",
    }
    with FakeCloud() as cloud:
        daemon = DaemonProcess(tmp_path / "home", env=env)
        cloud.add_to(daemon)  # before start: a provider the daemon knows from the first second
        with daemon:
            daemon.wait_until_model("ready")
            for command in (("status",), ("models", "list"), ("cloud", "list")):
                result = daemon.cli(*command)
                assert result.returncode == 0, result.stderr
            assert daemon.chat().status_code == 200
            tags = httpx.get(f"{daemon.url}/api/tags", headers=daemon.headers(), timeout=10)
            assert tags.status_code == 200
            assert STARTER_MODEL in {model["name"] for model in tags.json()["models"]}
            assert daemon.control("GET", "/models").status_code == 200
            assert hub.requests == [] and cloud.received == []
            # Listing models is what first asks the provider for its list, through the proxy
            # the environment names (which does not work here).
            listed = httpx.get(f"{daemon.base_url}/models", headers=daemon.headers(), timeout=10)
            assert listed.status_code == 200
            log = (daemon.home / "logs" / "daemon.log").read_text()
            assert "Cannot list the models of fake: the proxy failed" in log
