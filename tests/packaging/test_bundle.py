"""The packaged Linux app: `make package` builds it, and the bundle alone (no virtualenv on
its path) answers --version, serves the starter model to the openai SDK with a key, and stops
cleanly. Slow: PyInstaller takes a few minutes."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import psutil
import pytest
from openai import AuthenticationError, OpenAI

from localserve import __version__
from tests.daemon_process import STARTER_MODEL, DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dist" / "localserve" / "localserve"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="this machine builds the Linux bundle"),
    pytest.mark.timeout(1800),
]


@pytest.fixture(scope="module")
def bundle() -> Path:
    built = subprocess.run(
        ["make", "package"], cwd=ROOT, capture_output=True, text=True, timeout=1500
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert APP.is_file() and os.access(APP, os.X_OK)
    return APP


def test_the_bundle_answers_version_and_help(bundle: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}  # no virtualenv
    version = subprocess.run(
        [str(bundle), "--version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"localserve, version {__version__}"
    help_text = subprocess.run([str(bundle), "--help"], capture_output=True, text=True, env=env)
    assert "serve" in help_text.stdout and "autostart" in help_text.stdout


def test_the_tarball_holds_the_app(bundle: Path) -> None:
    arch = os.uname().machine
    tarball = ROOT / "dist" / f"localserve-{__version__}-linux-{arch}.tar.gz"
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    assert {"localserve/localserve", "localserve/README.txt"} <= names
    assert any(name.endswith(".gguf") for name in names)  # the starter model is inside


def test_the_bundle_serves_the_starter_model_and_exits_cleanly(
    bundle: Path, tmp_path: Path
) -> None:
    daemon = DaemonProcess(tmp_path / "home", command=[str(bundle)])
    with daemon:
        status = daemon.wait_until_model("ready")
        runner = psutil.Process(status["pid"])
        # The runner is the bundle too, started through its `-m localserve.runner` form.
        assert runner.exe() == str(bundle)
        assert runner.cmdline()[1:3] == ["-m", "localserve.runner"]
        client = OpenAI(base_url=daemon.base_url, api_key=daemon.admin_key)
        reply = client.chat.completions.create(
            model=STARTER_MODEL,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
        )
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        denied = OpenAI(base_url=daemon.base_url, api_key="lsk-wrong", max_retries=0)
        with pytest.raises(AuthenticationError):
            denied.models.list()
        assert daemon.cli("status").returncode == 0
    assert daemon.process is not None and daemon.process.returncode == 0
    assert not runner.is_running()
    assert not (tmp_path / "home" / "run" / "daemon.json").exists()
