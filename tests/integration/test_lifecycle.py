"""The daemon's life: clean stops, no orphans, crashes survived, bad models contained."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.daemon_process import (
    ENDLESS,
    STARTER_MODEL,
    DaemonProcess,
    run_cli,
    runner_pids,
)
from tests.helpers.model_files import starter_path, unknown_architecture_copy
from tests.helpers.this_cpu import first_runner_survives_env


def complete(daemon: DaemonProcess, timeout: float = 60, **changes: object) -> httpx.Response:
    """POST the ENDLESS completion, with ``changes`` applied, and return the response."""
    return httpx.post(
        f"{daemon.base_url}/completions",
        headers=daemon.headers(),
        json={**ENDLESS, **changes},
        timeout=timeout,
    )


CANCELLED_LINE = re.compile(r"generated (\d+) \(cancelled\)")


def cancelled_generations(daemon: DaemonProcess) -> list[int]:
    """Token counts of the generations the runner logged as cancelled, oldest first."""
    return [int(n) for n in CANCELLED_LINE.findall(daemon.runner_log())]


def assert_generation_cancelled(daemon: DaemonProcess, before: int, within_tokens: int) -> None:
    """The abandoned generation was cancelled early and the runner serves again.

    Judged by tokens, not seconds, so a busy machine cannot fail it: the request asked for 3000
    tokens, and stopping "within a second" means stopping within about a second's worth of them
    (~100 tokens/s here). The runner logs each generation with its token count.
    """
    deadline = time.monotonic() + 60
    while len(cancelled_generations(daemon)) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    counts = cancelled_generations(daemon)
    assert len(counts) > before, "the runner never cancelled the abandoned generation"
    assert counts[-1] < within_tokens, f"it went on for {counts[-1]} tokens"
    assert complete(daemon, max_tokens=1).status_code == 200


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_daemon_and_runner_cleanly(tmp_path: Path, sig: int) -> None:
    daemon = DaemonProcess(tmp_path / "home").start()
    daemon.wait_until_model("ready")
    runners = runner_pids(daemon.state["pid"])
    assert len(runners) == 1
    assert daemon.stop(sig) == 0
    assert wait_gone(runners[0]), "runner outlived the daemon"
    assert not (daemon.home / "run" / "daemon.json").exists()
    assert "Stopped." in daemon.output()


def test_runner_exits_when_daemon_is_killed(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home").start()
    daemon.wait_until_model("ready")
    (runner,) = runner_pids(daemon.state["pid"])
    daemon.stop(signal.SIGKILL)
    assert wait_gone(runner), "runner was orphaned"


def test_status_command(daemon: DaemonProcess) -> None:
    result = daemon.cli("status")
    assert result.returncode == 0, result.stderr
    assert f"running at {daemon.base_url}" in result.stdout
    assert f"model {STARTER_MODEL}: ready" in result.stdout


def test_status_when_not_running_is_one_line(tmp_path: Path) -> None:
    result = DaemonProcess(tmp_path / "nobody").cli("status")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: localserve is not running. Start it with `localserve serve`."
    )


def test_second_daemon_is_refused(daemon: DaemonProcess) -> None:
    result = daemon.cli("serve", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: localserve is already running at {daemon.url} (pid {daemon.state['pid']})."
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "example.com"])
def test_non_loopback_host_is_refused(tmp_path: Path, host: str) -> None:
    result = DaemonProcess(tmp_path / "home").cli("serve", "--host", host, "--port", "0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ")
    assert "remote access" in lines[-1]
    assert "Traceback" not in result.stderr


def test_client_disconnect_stops_generation(daemon: DaemonProcess) -> None:
    before = len(cancelled_generations(daemon))
    with daemon.stream_endless() as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    # Six events read, then the client is gone: the rest of the second is the allowance.
    assert_generation_cancelled(daemon, before, within_tokens=150)


def kill_runner_soon(daemon: DaemonProcess, delay: float) -> int:
    pid = daemon.model_status().pid
    assert pid is not None

    def kill() -> None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    return int(pid)


def test_runner_killed_mid_request_gives_503_then_recovers(daemon: DaemonProcess) -> None:
    before = daemon.model_status().restarts
    old_pid = kill_runner_soon(daemon, 0.8)
    response = complete(daemon, timeout=60)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "backend_unavailable"
    after = complete(daemon, max_tokens=4)
    assert after.status_code == 200, after.text
    status = daemon.model_status()
    assert status.state == "ready"
    assert status.restarts == before + 1
    assert status.pid != old_pid


def test_runner_killed_mid_stream_ends_stream_with_error_event(daemon: DaemonProcess) -> None:
    daemon.wait_until_model("ready")
    with daemon.stream_endless() as response:
        assert response.status_code == 200
        kill_runner_soon(daemon, 0.5)
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert '"backend_unavailable"' in events[-2]
    assert events[-1] == "data: [DONE]"
    daemon.wait_until_model("ready")
    again = complete(daemon, max_tokens=2)
    assert again.status_code == 200


def not_a_model(path: Path) -> Path:
    path.write_bytes(b"this is not a model at all" * 100)
    return path


def cut_short(path: Path) -> Path:
    path.write_bytes(starter_path().read_bytes()[: 4 * 1024 * 1024])
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        # Refused by the header check (a child process) before a runner starts:
        (not_a_model, "does not start with the GGUF magic bytes"),
        (cut_short, "past the end of the file"),
        # A sound header that llama.cpp itself refuses, in the runner:
        (unknown_architecture_copy, "llama.cpp could not load"),
    ],
)
def test_bad_model_file_fails_to_load_cleanly(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    bad = make(tmp_path / "broken.gguf")
    with DaemonProcess(tmp_path / "home", "--model", str(bad)) as daemon:
        assert httpx.get(f"{daemon.url}/health").status_code == 200
        status = daemon.wait_until_model("failed")
        assert expected in (status.last_error or "")
        response = httpx.post(
            f"{daemon.base_url}/chat/completions",
            headers=daemon.headers(),
            json={"model": "broken", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "model_load_failed"
        assert expected in error["message"]
        assert daemon.process is not None and daemon.process.poll() is None


def test_config_command_prints_valid_toml(tmp_path: Path) -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    daemon = DaemonProcess(tmp_path / "home", env={"LOCALSERVE_CTX": "2048"})
    result = daemon.cli("config")
    assert result.returncode == 0, result.stderr
    values = tomllib.loads(result.stdout)
    assert values["ctx"] == 2048
    assert values["host"] == "127.0.0.1"


def test_cors_only_for_configured_origins(tmp_path: Path) -> None:
    env = {"LOCALSERVE_CORS_ORIGINS": '["http://localhost:3000"]'}
    with DaemonProcess(tmp_path / "home", env=env) as daemon:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = httpx.options(
            f"{daemon.base_url}/chat/completions",
            headers={"Origin": "http://localhost:3000", **preflight},
        )
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = httpx.options(
            f"{daemon.base_url}/chat/completions",
            headers={"Origin": "https://evil.example", **preflight},
        )
        assert "access-control-allow-origin" not in other.headers
        assert other.status_code == 400


def test_abandoned_non_streaming_request_stops_generation(daemon: DaemonProcess) -> None:
    before = len(cancelled_generations(daemon))
    with pytest.raises(httpx.ReadTimeout):
        complete(daemon, timeout=1.0)
    # After the client's one-second wait, the runner must notice promptly; 1000 tokens is
    # several seconds on this machine and a third of what was asked.
    assert_generation_cancelled(daemon, before, within_tokens=1000)


def test_model_silent_past_request_timeout_is_504(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "home", env={"LOCALSERVE_REQUEST_TIMEOUT": "1"}) as daemon:
        daemon.wait_until_model("ready")
        response = complete(daemon, timeout=60)
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "backend_timeout"
        # The runner still serves. A 2-token answer takes ~0.1 s here, but on a loaded machine it
        # can pass the 1 s limit too: then it must be the same clean 504, and a retry answers.
        for _ in range(5):
            again = complete(daemon, max_tokens=2)
            if again.status_code != 504:
                break
            assert again.json()["error"]["code"] == "backend_timeout"
        assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--model", "nope"),
            "Error: The model 'nope' does not exist. Available: smollm2-135m-instruct.",
        ),
        (
            ("--model", "/no/such/file.gguf"),
            "Error: The model '/no/such/file.gguf' does not exist. No such file.",
        ),
        (("--ctx", "-5"), "Error: Invalid settings"),
        (("--gpu-layers", "many"), "Error: Invalid settings"),
    ],
)
def test_bad_serve_options_are_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = DaemonProcess(tmp_path / "home").cli("serve", "--port", "0", *args)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_runner_listens_on_loopback_and_demands_its_token(daemon: DaemonProcess) -> None:
    from localserve.hardware.devices import physical_cores

    status = daemon.model_status()
    assert status.info is not None
    assert status.info.threads == physical_cores()
    assert status.info.gpu_layers == 0  # this CPU-only build offloads nothing
    listening = [
        conn.laddr
        for conn in psutil.Process(status.pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert len(listening) == 1
    host, port = listening[0]
    assert host == "127.0.0.1"
    body = {"model": STARTER_MODEL, "prompt": "hi", "max_tokens": 1}
    for headers in ({}, {"Authorization": "Bearer guess"}, daemon.headers()):
        response = httpx.post(f"http://127.0.0.1:{port}/v1/completions", headers=headers, json=body)
        assert response.status_code == 401


def test_stop_command(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home").start()
    daemon.wait_until_model("ready")
    (runner,) = runner_pids(daemon.state["pid"])
    result = daemon.cli("stop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Stopped localserve (pid {daemon.state['pid']})."
    assert daemon.process is not None and daemon.process.wait(10) == 0
    assert wait_gone(runner)
    again = daemon.cli("stop")
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == "Error: localserve is not running. Start it with `localserve serve`."
    )


def test_after_an_unload_a_spare_runner_takes_the_next_load(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home").start()
    try:
        first = daemon.wait_until_model("ready").pid
        spare_log_file = daemon.home / "logs" / "spare-runner.log"
        first_runners_lines = len(spare_log_file.read_text())  # its load ahead, if any
        assert daemon.control("POST", f"/models/{STARTER_MODEL}/unload").json()["unloaded"]
        # The spare: a runner child with no model yet, recorded as such for orphan clean-up.
        deadline = time.monotonic() + 30
        while len(runner_pids(daemon.state["pid"])) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        (spare,) = runner_pids(daemon.state["pid"])
        assert spare != first and wait_gone(first)
        record = (daemon.home / "run" / "runners" / f"{spare}.json").read_text()
        assert '"model": "(spare)"' in record

        assert daemon.chat().status_code == 200  # loads the model again: into the spare
        assert daemon.model_status().pid == spare
        assert runner_pids(daemon.state["pid"]) == [spare]
        # Its log moved to the model's own once it had one.
        assert daemon.runner_log().count("loaded smollm2") == 2
        spare_log = spare_log_file.read_text()[first_runners_lines:]
        assert "loaded" not in spare_log
        assert daemon.stop(signal.SIGTERM) == 0
        assert wait_gone(spare)
    finally:
        daemon.stop()


def test_no_spare_runner_when_prestart_is_off(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home", env={"LOCALSERVE_PRESTART_RUNNER": "false"})
    with daemon:
        first = daemon.wait_until_model("ready").pid
        daemon.control("POST", f"/models/{STARTER_MODEL}/unload")
        assert wait_gone(first)
        time.sleep(1.0)  # a spare, were one started, would be a child by now
        assert runner_pids(daemon.state["pid"]) == []
        assert daemon.chat().status_code == 200
        assert daemon.model_status().pid not in (None, first)


def test_serve_adopts_the_runner_it_started_before_its_imports(tmp_path: Path) -> None:
    """`localserve serve` starts its first runner before importing the CLI (head_start.py); the
    daemon takes that very process for the first model, and starts no other (where the AMX
    kernels kill a first runner in its engine check, they are off for this test)."""
    env = {"LOCALSERVE_LOG_LEVEL": "debug", **first_runner_survives_env()}
    daemon = DaemonProcess(tmp_path / "home", env=env)
    with daemon:
        pid = daemon.wait_until_model("ready").pid
        assert runner_pids(daemon.state["pid"]) == [pid]
        daemon_log = (daemon.home / "logs" / "daemon.log").read_text()
        assert f"Spare runner adopted (pid {pid})" in daemon_log
        assert "Spare runner started" not in daemon_log


def runners_of_home(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "localserve.runner" not in (process.info["cmdline"] or []):
                continue
            if process.environ().get("LOCALSERVE_HOME") == str(home):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_the_early_runner_exits_when_serve_fails(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "LOCALSERVE_HOME": str(home)}
    result = run_cli("serve", "--model", "no-such-model", env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no-such-model" in result.stderr
    assert (home / "logs" / "spare-runner.log").exists()  # a runner was started, before the CLI
    deadline = time.monotonic() + 30
    while runners_of_home(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runners_of_home(home) == [], "the runner started for serve outlived it"


def whole_starter_record(home: Path) -> dict[str, object] | None:
    try:
        return dict(json.loads((home / "data" / "starter-model.json").read_text())["record"])
    except (OSError, ValueError):
        return None


def test_a_first_launch_keeps_the_starters_whole_record_after_its_first_answer(
    tmp_path: Path,
) -> None:
    """A first launch loads the starter with a record read from its header alone; the rest
    (its chat template's, read with Jinja) is made once the model has answered, a second
    after it is ready, or as the daemon stops if that comes sooner, and kept for the next
    launch (daemon.py, ``_complete_first_record``)."""
    env = first_runner_survives_env()
    stopped_at_once = tmp_path / "at-once"
    with DaemonProcess(stopped_at_once, env=env) as daemon:
        assert daemon.chat().status_code == 200
    record = whole_starter_record(stopped_at_once)
    assert record is not None and record["has_chat_template"] is True

    left_running = tmp_path / "running"
    with DaemonProcess(left_running, env=env) as daemon:
        assert daemon.chat().status_code == 200
        deadline = time.monotonic() + 30
        while whole_starter_record(left_running) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        record = whole_starter_record(left_running)
        assert record is not None and record["has_chat_template"] is True
