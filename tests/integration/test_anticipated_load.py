"""A launch's first runner loads the model the last launch with the same arguments loaded first,
before the daemon's handshake comes (daemon/head_start.py, runner/anticipation.py): kept when
the handshake asks for the same, freed when the settings changed, and a new runner process
when the guess named another CPU variant than the handshake."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from localserve.api.anticipation import GUESS_FIRST, STARTER, anticipation_line
from localserve.api.engine import EngineSettings
from localserve.api.runner import EnginePath, RunnerConfig
from localserve.hardware.devices import resolve_engine
from localserve.program import runner_command
from localserve.runner import llama_backends
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess, runner_pids
from tests.helpers.model_files import starter_path
from tests.helpers.this_cpu import first_runner_survives_env

TAKEN_AHEAD = f"loaded {STARTER_MODEL} ahead of the handshake"
LOADING_AHEAD = "ahead of the handshake (the last launch's first model)"
NOT_THE_GUESS = "asked for another load than the guess"
STARTER_AHEAD = "Loading the starter model ahead of the handshake (a first launch)"
STARTER_TAKEN = "took the weights loaded ahead of the handshake"
NOT_THE_STARTER = "asked for another load than the starter's"


def memory_file(home: Path) -> Path:
    return home / "data" / "first-runner.json"


def kept(home: Path, timeout: float = 10.0, **expected: Any) -> dict[str, Any]:
    """The kept handshake, once the daemon has written it with ``expected`` engine values
    (it writes once the first model is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            memory = json.loads(memory_file(home).read_text())
        except (OSError, ValueError):
            memory = None
        engine = memory["handshake"]["engine"] if memory else {}
        if memory and all(engine.get(name) == value for name, value in expected.items()):
            return memory
        time.sleep(0.05)
    raise AssertionError(f"no first runner kept with {expected} in {memory_file(home)}")


def greedy(daemon: DaemonProcess) -> str:
    response = daemon.chat(max_tokens=12, temperature=0)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


LOG_NAMES = ("spare-runner.log", f"runner-{STARTER_MODEL}.log")


def log_sizes(home: Path) -> dict[str, int]:
    return {name: len(logs(home, {name: 0})) for name in LOG_NAMES}


def logs(home: Path, since: dict[str, int] | None = None) -> str:
    """The runners' logs (the spare's, the model's), each from offset ``since`` on."""
    texts = []
    for name in LOG_NAMES if since is None else since:
        path = home / "logs" / name
        if path.exists():
            texts.append(path.read_text()[(since or {}).get(name, 0) :])
    return "".join(texts)


def test_a_second_launch_takes_the_model_it_loaded_ahead(tmp_path: Path) -> None:
    home, env = tmp_path / "home", first_runner_survives_env()
    with DaemonProcess(home, env=env) as first:
        first.wait_until_model("ready")
        answer = greedy(first)
        memory = kept(home)
    assert memory["args"] == ["serve", "--port", "0"]
    assert "token" not in memory["handshake"]
    assert memory["handshake"]["engine_path"]["trial"] is False  # the check's verdict
    first_launch = logs(home)
    assert LOADING_AHEAD not in first_launch  # a fresh home has no launch to recall
    # ... but its runner loads the starter's weights while it waits, unless the settings'
    # variables say another way to load (here: weight_repack where extra buffers crash) or
    # the daemon decides GPU layers (a build that can offload).
    guessed = not env and not llama_backends.gpu_offload_supported()
    assert (STARTER_AHEAD in first_launch) == (STARTER_TAKEN in first_launch) == guessed

    with DaemonProcess(home, env=env) as second:
        pid = second.wait_until_model("ready").pid
        assert TAKEN_AHEAD in second.runner_log()
        assert LOADING_AHEAD in (home / "logs" / "spare-runner.log").read_text()
        assert greedy(second) == answer  # the engine made ahead answers as a loaded one
        assert runner_pids(second.state["pid"]) == [pid]


def test_other_arguments_are_not_guessed_and_changed_settings_are_loaded_anew(
    tmp_path: Path,
) -> None:
    home, env = tmp_path / "home", first_runner_survives_env()
    with DaemonProcess(home, env=env) as first:
        first.wait_until_model("ready")
        kept(home, ctx=4096)

    with DaemonProcess(home, "--threads", "1", env=env) as other_args:
        other_args.wait_until_model("ready")
        assert LOADING_AHEAD not in logs(home)
        kept(home, threads=1)  # now kept for these arguments

    before = log_sizes(home)
    with DaemonProcess(home, "--threads", "1", env={**env, "LOCALSERVE_CTX": "2048"}) as changed:
        status = changed.wait_until_model("ready")
        assert status.info is not None and status.info.n_ctx == 2048
        assert greedy(changed)
        this_launch = logs(home, before)
        assert LOADING_AHEAD in this_launch and NOT_THE_GUESS in this_launch
        assert TAKEN_AHEAD not in this_launch
        kept(home, ctx=2048)


def test_a_guess_on_another_cpu_variant_gets_a_new_runner(tmp_path: Path) -> None:
    ranked = llama_backends.ranked_variants(llama_backends.variant_scores())
    if len(ranked) < 2:
        pytest.skip("one CPU variant (or a native build): no other variant to guess")
    home, env = tmp_path / "home", first_runner_survives_env()
    with DaemonProcess(home, env=env) as first:
        first.wait_until_model("ready")
        memory = kept(home)
    chosen = memory["handshake"]["engine_path"]["cpu_variant"]
    memory["handshake"]["engine_path"]["cpu_variant"] = next(v for v in ranked if v != chosen)
    memory_file(home).write_text(json.dumps(memory))

    with DaemonProcess(home, env=env) as second:
        status = second.wait_until_model("ready")
        assert status.info is not None and status.info.cpu_variant == chosen
        assert greedy(second)
        daemon_log = (home / "logs" / "daemon.log").read_text()
        assert "asked for a new process" in daemon_log
        assert runner_pids(second.state["pid"]) == [status.pid]  # the first one exited
        assert kept(home)["handshake"]["engine_path"]["cpu_variant"] == chosen


def test_load_ahead_off_forgets_the_first_runner(tmp_path: Path) -> None:
    home, env = tmp_path / "home", first_runner_survives_env()
    with DaemonProcess(home, env=env) as first:
        first.wait_until_model("ready")
        kept(home)
    with DaemonProcess(home, env={**env, "LOCALSERVE_LOAD_AHEAD": "false"}) as off:
        off.wait_until_model("ready")
        deadline = time.monotonic() + 10
        while memory_file(home).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not memory_file(home).exists()
        assert greedy(off)


def test_a_first_launch_guess_is_freed_for_the_file_the_handshake_names(tmp_path: Path) -> None:
    """The starter's weights loaded ahead (a first launch's guess) are freed when the
    handshake names another file, which the runner then loads and serves."""
    if first_runner_survives_env():
        pytest.skip("the starter's guess loads with extra buffer types, which crash here")
    if llama_backends.gpu_offload_supported():
        pytest.skip("a build that can offload: the daemon decides GPU layers, no guess")
    other = tmp_path / "other.gguf"
    other.symlink_to(starter_path())
    ranked = llama_backends.ranked_variants(llama_backends.variant_scores())
    variant = ranked[0] if llama_backends.is_portable_build() else None
    log_file = tmp_path / "runner-other.log"
    config = RunnerConfig(
        model_path=str(other),
        model_id="other",
        token="t",
        engine=resolve_engine(EngineSettings(ctx=512, threads=2), False),
        engine_path=EnginePath(variant, True, "as a first start loads", checked=True),
        log_file=str(log_file),
    )
    with (tmp_path / "spare-runner.log").open("wb") as spare_log:
        runner = subprocess.Popen(
            [*runner_command(), GUESS_FIRST],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=spare_log,
        )
    assert runner.stdin is not None and runner.stdout is not None
    try:
        runner.stdin.write(anticipation_line(STARTER) + config.to_line())
        runner.stdin.flush()
        with ThreadPoolExecutor(1) as reader:
            event = json.loads(reader.submit(runner.stdout.readline).result(timeout=120))
    finally:
        runner.stdin.close()
        runner.wait(60)
        runner.stdout.close()
    assert event["event"] == "ready" and event["info"]["model_id"] == "other"
    assert STARTER_AHEAD in (tmp_path / "spare-runner.log").read_text()
    runner_log = log_file.read_text()
    assert NOT_THE_STARTER in runner_log and STARTER_TAKEN not in runner_log
