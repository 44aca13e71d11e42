"""The packaged Linux app: `make package` builds it, and the bundle alone (no virtualenv on
its path) answers --version, serves the starter model to the openai SDK with a key, and stops
cleanly. Slow: PyInstaller takes a few minutes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import psutil
import pytest
from openai import AuthenticationError, OpenAI

from localserve import __version__
from localserve.runner.engine_check import CheckPlan
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.model_files import starter_path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dist" / "localserve" / "localserve"
QEMU = shutil.which("qemu-x86_64")

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
        runner = psutil.Process(status.pid)
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


@pytest.mark.skipif(
    QEMU is None or os.uname().machine != "x86_64",
    reason="needs Debian's qemu-user on x86-64 (.ci/run installs it: apt-get install qemu-user)",
)
def test_the_bundled_engine_decodes_on_a_cpu_without_avx512(bundle: Path) -> None:
    """The app users download must run on any x86-64 CPU with AVX2, not only on the build
    machine's: under qemu's Haswell (AVX2, no AVX-512) its engine picks the haswell kernels and
    writes tokens. A llama.cpp built with -march=native on an AVX-512 machine dies of SIGILL
    here."""
    assert QEMU is not None
    plan = CheckPlan(
        model_path=str(starter_path()),
        cpu_variant="best",
        extra_buffers=True,
        gpu_layers=0,
        threads=2,
        generate=8,
    )
    result = subprocess.run(
        [QEMU, "-cpu", "Haswell", str(bundle), "-m", "localserve.runner.engine_check"],
        input=plan.to_line(),
        capture_output=True,
        timeout=600,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/tmp"),
            # PyInstaller's bootloader re-executes itself once to apply LD_LIBRARY_PATH, and
            # qemu-user runs an exec'd program natively: hand it the second stage's variables
            # (as its first stage sets them) so the app runs under emulation from the start.
            "_PYI_ARCHIVE_FILE": str(bundle),
            "_PYI_PARENT_PROCESS_LEVEL": "-1",
            "_PYI_LINUX_PROCESS_NAME": "localserve",
            "LD_LIBRARY_PATH": str(bundle.parent / "_internal"),
        },
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith(b"{")]
    variants, outcome = events[0], events[-1]
    assert variants["ranked"][0] == "haswell"
    assert variants["scores"]["skylakex"] == 0  # no AVX-512 here
    assert outcome["event"] == "ok" and outcome["cpu_variant"] == "haswell"
    assert len(outcome["text"].strip()) > 0
