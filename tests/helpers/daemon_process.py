"""Start and stop a real ``localserve serve`` subprocess for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import psutil
from pydantic import BaseModel

from localserve.api.control import DaemonStatus, ModelStatus, StatsSnapshot

AnswerT = TypeVar("AnswerT", bound=BaseModel)

STARTER_MODEL = "smollm2-135m-instruct"
LOCALSERVE = [sys.executable, "-m", "localserve"]
# A completion the starter model continues for thousands of tokens at temperature 0.
ENDLESS = {"model": STARTER_MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 3000, "temperature": 0}


class DaemonProcess:
    def __init__(
        self,
        home: Path,
        *args: str,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.home = home
        self.command = command or LOCALSERVE  # or a packaged app
        self.args = args
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {}
        self._sdk: Any = None

    # -- lifecycle --------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSERVE_")}
        env.update(
            LOCALSERVE_HOME=str(self.home),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0, poll_s: float = 0.05) -> DaemonProcess:
        """Launch it and wait for its state file (looked for every ``poll_s`` seconds)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / "stdout.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*self.command, "serve", "--port", "0", *self.args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        state_file = self.home / "run" / "daemon.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited early:\n{self.output()}")
            if state_file.exists():
                try:
                    state = json.loads(state_file.read_text())
                except ValueError:
                    state = {}
                if state.get("pid") == self.process.pid:
                    self.state = state
                    return self
            time.sleep(poll_s)
        raise TimeoutError(f"daemon did not start:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self._sdk is not None:
            self._sdk.close()
            self._sdk = None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def output(self) -> str:
        path = self.home / "stdout.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- talking to it ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.state['port']}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def openai(self) -> Any:
        """One ``openai.OpenAI`` client of this daemon (no retries), closed when it stops: a
        client left to the garbage collector leaves a socket open, a ResourceWarning."""
        if self._sdk is None:
            from openai import OpenAI

            self._sdk = OpenAI(base_url=self.base_url, api_key=self.admin_key, max_retries=0)
        return self._sdk

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env(), input=input, timeout=60, command=self.command)

    @property
    def admin_key(self) -> str:
        """Read from the 0600 fallback file (tests run with the fail keyring backend)."""
        return (self.home / "config" / "admin.key").read_text().strip()

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A control API call with the admin key (``path`` after ``/localserve/v1``)."""
        kwargs.setdefault("timeout", 30)
        return httpx.request(
            method, f"{self.url}/localserve/v1{path}", headers=self.headers(), **kwargs
        )

    def chat(self, model: str = STARTER_MODEL, **fields: Any) -> httpx.Response:
        """A short chat request ("Hi", 2 tokens unless ``fields`` say otherwise)."""
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 2,
            **fields,
        }
        return httpx.post(
            f"{self.base_url}/chat/completions", headers=self.headers(), json=body, timeout=60
        )

    def stream_chat(
        self, content: str, max_tokens: int, key: str | None = None
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        """A streamed chat request on the starter model, to read as it arrives (SSE lines)."""
        body = {
            "model": STARTER_MODEL,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        return httpx.stream(
            "POST",
            f"{self.base_url}/chat/completions",
            headers=self.headers(key),
            json=body,
            timeout=120,
        )

    def stream_endless(
        self, model: str = STARTER_MODEL
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        """The ENDLESS completion of ``model``, streamed, to hold the model busy."""
        return httpx.stream(
            "POST",
            f"{self.base_url}/completions",
            headers=self.headers(),
            json={**ENDLESS, "model": model, "stream": True},
            timeout=60,
        )

    def runner_log(self, model: str = STARTER_MODEL) -> str:
        """What the runner of ``model`` has logged so far ("" before it first starts)."""
        path = self.home / "logs" / f"runner-{model}.log"
        return path.read_text() if path.exists() else ""

    def answer(self, model: type[AnswerT], method: str, path: str, **kwargs: Any) -> AnswerT:
        """A control API call's answer read as its ``api/control.py`` model, as the CLI and
        the tray read it (an error status raises)."""
        response = self.control(method, path, **kwargs)
        response.raise_for_status()
        return model.model_validate_json(response.content)

    def status(self) -> DaemonStatus:
        return self.answer(DaemonStatus, "GET", "/status", timeout=5)

    def stats(self, history: bool = False) -> StatsSnapshot:
        return self.answer(StatsSnapshot, "GET", "/stats", params={"history": history})

    def model_status(self, model: str | None = None) -> ModelStatus:
        """The status of ``model`` (default: the model it serves by default); state
        "unloaded" when it has no runner."""
        details = self.status()
        wanted = model or details.default_model
        return details.model(wanted) or ModelStatus(model_id=wanted, state="unloaded")

    def stats_after(self, requests: int, timeout: float = 10.0) -> StatsSnapshot:
        """The /stats snapshot once the daemon has recorded ``requests`` finished requests: a
        runner reports a request as it ends, which can reach the daemon after the answer."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats.totals.requests >= requests or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    def wait_until_model(
        self, *states: str, model: str | None = None, timeout: float = 60.0
    ) -> ModelStatus:
        deadline = time.monotonic() + timeout
        status: ModelStatus | None = None
        while time.monotonic() < deadline:
            status = self.model_status(model)
            if status.state in states:
                return status
            time.sleep(0.1)
        raise TimeoutError(f"model never reached {states}: {status}\n{self.output()}")


def runner_pids(daemon_pid: int) -> list[int]:
    """The daemon's child processes (its runners), by pid."""
    return [child.pid for child in psutil.Process(daemon_pid).children(recursive=True)]


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
    command: list[str] = LOCALSERVE,
) -> subprocess.CompletedProcess[str]:
    """``localserve ARGS`` in a subprocess (this process's environment unless ``env``)."""
    return subprocess.run(
        [*command, *args],
        env=os.environ.copy() if env is None else env,
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
    )
