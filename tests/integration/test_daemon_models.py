"""The daemon's models: loaded on first use within max_loaded_models, and the control API for
the library (pull with SSE progress, join, cancel, resume; list; remove) against a fake Hub.

Real daemon subprocesses, real runners, the real ``openai`` SDK; the Hub is
tests/helpers/fake_hub.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from openai import OpenAI

from localserve.api.control import (
    HubQuantList,
    HubRepoList,
    ModelList,
    ModelStatus,
    PullList,
    PullSnapshot,
    PullState,
    StartedPull,
)
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.fake_hub import FakeHub
from tests.helpers.model_files import starter_path


def repo_file(repo: str) -> str:
    return repo.split("/")[1].removesuffix("-GGUF") + "-Q4_1.gguf"


def repo_model(repo: str) -> str:
    return repo.split("/")[1].removesuffix("-GGUF").lower() + "-q4_1"


REPOS = ["example/Pulled-GGUF", "example/Joined-GGUF", "example/Removed-GGUF", "example/Cli-GGUF"]


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    data = starter_path().read_bytes()
    with FakeHub() as fake:
        for repo in REPOS:
            fake.add_repo(repo, {repo_file(repo): data})
        yield fake


@pytest.fixture(scope="module")
def daemon(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with hub.daemon(tmp_path_factory.mktemp("library-daemon")) as running:
        running.wait_until_model("ready")
        yield running


def events(daemon: DaemonProcess, pull_id: str) -> Iterator[PullSnapshot]:
    url = f"{daemon.url}/localserve/v1/pulls/{pull_id}/events"
    with httpx.stream("GET", url, headers=daemon.headers(), timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield PullSnapshot.model_validate_json(line[len("data: ") :])


def start_pull(daemon: DaemonProcess, spec: str) -> StartedPull:
    return daemon.answer(StartedPull, "POST", "/pulls", json={"model": spec})


def openai_client(daemon: DaemonProcess) -> OpenAI:
    sdk: OpenAI = daemon.openai()
    return sdk


def say_hi(daemon: DaemonProcess, model: str) -> str:
    reply = openai_client(daemon).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    return str(reply.model)


def test_a_pull_streams_progress_and_the_model_serves_on_first_request(
    daemon: DaemonProcess, hub: FakeHub
) -> None:
    repo = "example/Pulled-GGUF"
    started = daemon.control("POST", "/pulls", json={"model": repo})
    assert started.status_code == 202, started.text
    job = StartedPull.model_validate_json(started.content)
    assert job.state is PullState.RUNNING and job.joined is False
    assert job.files == [repo_file(repo)] and job.total_bytes == 98_362_432
    seen = list(events(daemon, job.id))
    assert seen[-1].state is PullState.DONE and seen[-1].model == repo_model(repo)
    done = [event.done_bytes for event in seen]
    assert done == sorted(done) and done[-1] == job.total_bytes

    listed = {m.name: m for m in daemon.answer(ModelList, "GET", "/models").data}
    pulled = listed[repo_model(repo)]
    assert pulled.state == "unloaded" and pulled.source_repo == repo
    assert pulled.fit.verdict == "cpu" and pulled.quant_type == "Q4_1"
    assert listed[STARTER_MODEL].state == "ready" and listed[STARTER_MODEL].default
    assert repo_model(repo) in [m.id for m in openai_client(daemon).models.list()]

    # Naming it in a request loads it; the default model stays loaded (max_loaded_models = 2).
    assert say_hi(daemon, repo_model(repo).upper()) == repo_model(repo)
    assert daemon.model_status(repo_model(repo)).state == "ready"
    assert daemon.model_status(STARTER_MODEL).state == "ready"
    assert daemon.answer(PullSnapshot, "GET", f"/pulls/{job.id}").state is PullState.DONE


def test_a_second_pull_of_the_same_file_joins_and_cancel_keeps_the_part(
    daemon: DaemonProcess, hub: FakeHub
) -> None:
    repo = "example/Joined-GGUF"
    hub.bytes_per_second = 20_000_000
    hub.requests.clear()
    try:
        first = start_pull(daemon, repo)
        second = start_pull(daemon, f"{repo}:Q4_1")
        assert second.id == first.id and second.joined is True
        listed = daemon.answer(PullList, "GET", "/pulls").data
        assert [job.id for job in listed].count(first.id) == 1
        for event in events(daemon, first.id):
            if event.done_bytes > 10_000_000:
                break
        cancelled = daemon.control("DELETE", f"/pulls/{first.id}")
        assert cancelled.status_code == 200
        final = list(events(daemon, first.id))[-1]
        assert final.state is PullState.CANCELLED and "resumes" in (final.error or "")
    finally:
        hub.bytes_per_second = None
    downloads = [r for m, p, r in hub.requests if m == "GET" and repo_file(repo) in p]
    assert downloads == [None]  # two pulls, one download
    part = daemon.home / "data" / "models" / repo_model(repo) / (repo_file(repo) + ".part")
    kept = part.stat().st_size
    assert 10_000_000 < kept < 98_362_432
    assert repo_model(repo) not in [m.id for m in openai_client(daemon).models.list()]

    resumed = start_pull(daemon, repo)
    assert resumed.id != first.id
    assert list(events(daemon, resumed.id))[-1].state is PullState.DONE
    downloads = [r for m, p, r in hub.requests if m == "GET" and repo_file(repo) in p]
    assert downloads == [None, f"bytes={kept}-"]
    installed = part.with_name(repo_file(repo))
    assert installed.read_bytes() == starter_path().read_bytes()


def test_remove_unloads_a_loaded_model_first(daemon: DaemonProcess, hub: FakeHub) -> None:
    repo = "example/Removed-GGUF"
    job = start_pull(daemon, repo)
    assert list(events(daemon, job.id))[-1].state is PullState.DONE
    name = repo_model(repo)
    loaded = daemon.answer(ModelStatus, "POST", f"/models/{name}/load")
    assert loaded.state == "ready"
    runner = psutil.Process(loaded.pid)
    removed = daemon.control("DELETE", f"/models/{name}")
    assert removed.status_code == 200, removed.text
    assert not runner.is_running() or runner.status() == psutil.STATUS_ZOMBIE
    assert daemon.model_status(name).state == "unloaded"
    assert not (daemon.home / "data" / "models" / name).exists()
    assert name not in [m.id for m in openai_client(daemon).models.list()]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/pulls", {"model": "nobody/missing-GGUF"}, 404, "repo_not_found"),
        ("POST", "/pulls", {"model": "not-a-repo"}, 404, "repo_not_found"),
        ("POST", "/pulls", {"model": "example/Pulled-GGUF:Q9_9"}, 404, "repo_not_found"),
        ("POST", "/pulls", {"nothing": 1}, 400, None),
        ("GET", "/pulls/0000", None, 404, "pull_not_found"),
        ("DELETE", "/pulls/0000", None, 404, "pull_not_found"),
        ("DELETE", "/models/no-such-model", None, 404, "model_not_found"),
        ("DELETE", f"/models/{STARTER_MODEL}", None, 409, "model_in_use"),
        ("POST", "/models/no-such-model/load", None, 404, "model_not_found"),
        ("POST", "/models/no-such-model/unload", None, 404, "model_not_found"),
    ],
)
def test_control_api_errors_are_clear(
    daemon: DaemonProcess,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    code: str | None,
) -> None:
    response = daemon.control(method, path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["code"] == code


def test_the_control_api_needs_the_admin_key(daemon: DaemonProcess) -> None:
    client_key = daemon.cli("key", "add", "editor").stdout.strip()
    for method, path in [("GET", "/models"), ("POST", "/pulls"), ("GET", "/pulls")]:
        url = f"{daemon.url}/localserve/v1{path}"
        assert httpx.request(method, url, timeout=5).status_code == 401
        forbidden = httpx.request(method, url, headers=daemon.headers(client_key), timeout=5)
        assert forbidden.status_code == 403


def test_hub_search_and_files_through_the_daemon(daemon: DaemonProcess) -> None:
    found = daemon.answer(HubRepoList, "GET", "/hub/search", params={"q": "pulled"}).data
    assert [repo.repo_id for repo in found] == ["example/Pulled-GGUF"]
    files = daemon.answer(HubQuantList, "GET", "/hub/files", params={"repo": "example/Pulled-GGUF"})
    (quant,) = files.data
    assert quant.quant == "Q4_1" and quant.size_bytes == 98_362_432
    assert quant.fit is not None
    assert quant.fit.verdict == "cpu" and quant.fit.total_bytes > 98_362_432
    missing = daemon.control("GET", "/hub/files", params={"repo": "nobody/missing-GGUF"})
    assert missing.status_code == 404


def test_cli_pull_runs_in_the_daemon(daemon: DaemonProcess) -> None:
    result = daemon.cli("models", "pull", "example/Cli-GGUF")
    assert result.returncode == 0, result.stderr
    assert "in the daemon" in result.stdout and "Installed cli-q4_1" in result.stdout
    jobs = daemon.answer(PullList, "GET", "/pulls").data
    assert any(job.repo_id == "example/Cli-GGUF" and job.state is PullState.DONE for job in jobs)


# -- max_loaded_models ------------------------------------------------------------------------
@pytest.fixture
def one_model_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    home = tmp_path / "one-model"
    with DaemonProcess(home, env={"LOCALSERVE_MAX_LOADED_MODELS": "1"}) as running:
        running.wait_until_model("ready")
        linked = running.cli("models", "import", str(starter_path()), "--link", "--name", "other")
        assert linked.returncode == 0, linked.stderr
        yield running


def test_the_least_recently_used_model_makes_room(one_model_daemon: DaemonProcess) -> None:
    daemon = one_model_daemon
    first_runner = psutil.Process(daemon.model_status().pid)
    assert say_hi(daemon, "other") == "other"
    assert [s.model_id for s in daemon.status().models] == ["other"]
    first_runner.wait(timeout=10)  # the default model's runner was stopped to make room
    assert say_hi(daemon, STARTER_MODEL) == STARTER_MODEL
    assert [s.model_id for s in daemon.status().models] == [STARTER_MODEL]


def test_a_busy_model_is_not_evicted(one_model_daemon: DaemonProcess) -> None:
    """With every loaded model busy, a request for another gets a quick 503, not a hang."""
    daemon = one_model_daemon
    stream = openai_client(daemon).chat.completions.create(
        model=STARTER_MODEL,
        messages=[{"role": "user", "content": "Count from one to one hundred in words."}],
        max_tokens=300,
        stream=True,
    )
    first = next(iter(stream))
    assert first.model == STARTER_MODEL
    result: dict[str, Any] = {}

    def ask_other() -> None:
        started = time.monotonic()
        response = httpx.post(
            f"{daemon.base_url}/chat/completions",
            headers=daemon.headers(),
            json={"model": "other", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=30,
        )
        result.update(status=response.status_code, body=response.json())
        result["seconds"] = time.monotonic() - started

    asker = threading.Thread(target=ask_other)
    asker.start()
    asker.join(30)
    remaining = sum(1 for _ in stream)
    assert result["status"] == 503, result
    assert "busy" in result["body"]["error"]["message"] and result["seconds"] < 5
    assert remaining > 0
    assert say_hi(daemon, "other") == "other"  # once the stream ended, it can make room


def test_a_model_too_large_for_free_memory_is_refused(one_model_daemon: DaemonProcess) -> None:
    daemon = one_model_daemon
    runner_pid = daemon.model_status(STARTER_MODEL).pid
    assert (
        daemon.cli("models", "import", str(starter_path()), "--link", "--name", "huge").returncode
        == 0
    )
    record_file = daemon.home / "data" / "models" / "huge" / "model.json"
    record = json.loads(record_file.read_text())
    record["size_bytes"] = 10 * 2**40  # what a 10 TB model's record would say
    record_file.write_text(json.dumps(record))
    response = httpx.post(
        f"{daemon.base_url}/chat/completions",
        headers=daemon.headers(),
        json={"model": "huge", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_too_large" and "free" in error["message"]
    # Refused before anything was unloaded to make room for it.
    assert daemon.model_status(STARTER_MODEL).pid == runner_pid
    assert say_hi(daemon, STARTER_MODEL) == STARTER_MODEL
