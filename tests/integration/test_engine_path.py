"""The engine check: each runner's llama.cpp path is proven to decode on this CPU first.

llama.cpp's AMX kernels crash on Sapphire Rapids class Xeons where GCC before 14 built them.
The check's child dies as they do when ``LOCALSERVE_ENGINE_CHECK_CRASH`` asks it to, so every
fallback, verdict and message is tested here on any CPU, with real children, real llama.cpp and
a real daemon. Where the real kernels crash too (``tests/helpers/this_cpu.py``), the tests
expect the path that decodes here.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from localserve.daemon import engine_path
from localserve.daemon.engine_path import EngineChoice, VerdictStore, choose_engine_path
from localserve.errors import ModelLoadError
from localserve.runner import llama_backends
from localserve.runner.engine_check import CRASH_ENV
from tests.helpers.daemon_process import DaemonProcess
from tests.helpers.model_files import starter_path
from tests.helpers.this_cpu import (
    best_kernels_check,
    extra_buffers_decode_here,
    first_runner_survives_env,
)

QUANT = "Q4_1"  # the starter model's


@pytest.fixture
def checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, bool]]:
    """The paths each check child was asked to run, in order."""
    runs: list[tuple[str | None, bool]] = []
    real = engine_path.run_check

    def counted(plan, timeout):  # type: ignore[no-untyped-def]
        runs.append((plan.cpu_variant, plan.extra_buffers))
        return real(plan, timeout)

    monkeypatch.setattr(engine_path, "run_check", counted)
    return runs


def ranked_here() -> list[str]:
    """This CPU's variants of a portable build, best first (none for a native build)."""
    return llama_backends.ranked_variants(llama_backends.variant_scores())


def best_variant() -> str | None:
    if not llama_backends.is_portable_build():
        return None
    return ranked_here()[0]


def best_path_here() -> tuple[str | None, bool]:
    """The first candidate that decodes on this CPU: extra buffer types off where they crash."""
    return best_variant(), extra_buffers_decode_here()


def choose(tmp_path: Path, choice: EngineChoice | None = None) -> engine_path.EnginePath:
    store = VerdictStore(tmp_path / "engine-checks.json")
    return choose_engine_path(starter_path(), QUANT, choice or EngineChoice(), store)


def test_the_best_path_is_checked_once_and_kept(
    tmp_path: Path, checks: list[tuple[str | None, bool]]
) -> None:
    extra = extra_buffers_decode_here()
    path = choose(tmp_path)
    assert (path.cpu_variant, path.extra_buffers, path.checked) == (*best_path_here(), True)
    if extra:
        assert "extra buffer types on" in path.note and len(checks) == 1
    else:  # the first child died of the real kernels; the second decoded without them
        assert "off: llama.cpp crashes with them on this CPU" in path.note
        assert [on for _, on in checks] == [True, False]
    tried = len(checks)
    again = choose(tmp_path)
    assert again == path and len(checks) == tried  # the verdict is kept: no more children
    stored = json.loads((tmp_path / "engine-checks.json").read_text())
    (entry,) = stored.values()
    assert entry["verdict"]["cpu_variant"] == best_variant() and entry["quant_type"] == QUANT


def test_a_crash_with_extra_buffer_types_turns_them_off_and_says_why(
    tmp_path: Path, checks: list[tuple[str | None, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_ENV, "extra_buffers")
    path = choose(tmp_path)
    assert (path.cpu_variant, path.extra_buffers, path.checked) == (best_variant(), False, True)
    assert "off: llama.cpp crashes with them on this CPU (SIGSEGV in the engine check" in path.note
    assert [extra for _, extra in checks] == [True, False]
    assert choose(tmp_path) == path and len(checks) == 2
    # A simulated verdict is never taken for a real one: without the switch, it checks anew.
    monkeypatch.delenv(CRASH_ENV)
    real = choose(tmp_path)
    assert real.extra_buffers is extra_buffers_decode_here()
    assert len(checks) == (3 if real.extra_buffers else 4)  # where they crash: both again


def test_a_crashing_cpu_variant_falls_back_to_the_next_best(
    tmp_path: Path, checks: list[tuple[str | None, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not llama_backends.is_portable_build():
        pytest.skip("a native build has one CPU backend")
    ranked = ranked_here()
    monkeypatch.setenv(CRASH_ENV, f"variant:{ranked[0]}")
    path = choose(tmp_path)
    assert (path.cpu_variant, path.extra_buffers) == (ranked[1], True)
    assert f"{ranked[0]} crashed on this CPU" in path.note


def test_when_every_path_crashes_the_model_fails_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_ENV, "always")
    with pytest.raises(
        ModelLoadError, match=r"llama\.cpp crashes on this CPU with this model's Q4_1"
    ):
        choose(tmp_path)


def test_the_settings_force_the_choice(
    tmp_path: Path, checks: list[tuple[str | None, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    off = choose(tmp_path, EngineChoice(weight_repack="off"))
    assert off.extra_buffers is False and "(weight_repack = off)" in off.note
    assert [extra for _, extra in checks] == [False]  # extra buffer types never tried
    monkeypatch.setenv(CRASH_ENV, "extra_buffers")
    with pytest.raises(ModelLoadError, match="Set weight_repack and cpu_variant to 'auto'"):
        choose(tmp_path, EngineChoice(weight_repack="on"))
    if llama_backends.is_portable_build():
        haswell = choose(tmp_path, EngineChoice(cpu_variant="haswell", weight_repack="off"))
        assert haswell.cpu_variant == "haswell"


def test_a_daemon_serves_on_the_safe_path_and_reports_it(tmp_path: Path) -> None:
    env = {CRASH_ENV: "extra_buffers"}
    with DaemonProcess(tmp_path / "home", env=env) as daemon:
        status = daemon.wait_until_model("ready")
        info = status.info
        assert info is not None
        assert info.extra_buffers is False and info.cpu_variant == best_variant()
        assert "llama.cpp crashes with them on this CPU" in info.engine_note
        # The first runner checked the first path itself, and died of it there (a trial).
        assert "(SIGSEGV in a runner's own check with Q4_1 weights)" in info.engine_note
        assert "died of SIGSEGV in its engine check" in daemon.output()
        # Its restart checked the next path itself too: no check child ran.
        log = daemon.output()
        assert "Engine check passed in the runner" in log
        assert "Engine check passed in " not in log.replace("passed in the runner", "")
        if best_variant() is not None:  # ranked by the runner that crashed
            assert "(the best of this build for this CPU)" in info.engine_note
        assert info.backend.startswith("CPU")
        assert daemon.chat(max_tokens=4).status_code == 200
        engine = daemon.control("GET", "/status").json()["engine"]
        assert engine["build"] == ("portable" if best_variant() else "native")
        shown = daemon.cli("status").stdout
        assert "llama.cpp crashes with them on this CPU" in shown
        assert "runs on CPU" in shown
        assert "llama.cpp: " in daemon.runner_log()


def test_a_daemon_whose_runners_crash_on_every_path_fails_the_model_with_the_reason(
    tmp_path: Path,
) -> None:
    """Each runner checks the next path after the last one crashed in its own check; when
    none is left, the model fails instead of restarting forever."""
    with DaemonProcess(tmp_path / "home", env={CRASH_ENV: "always"}) as daemon:
        status = daemon.wait_until_model("failed", timeout=120)
        assert "llama.cpp crashes on this CPU with this model's Q4_1" in (status.last_error or "")
        crashes = daemon.output().count("died of SIGSEGV in its engine check")
        paths = 2 * min(engine_path.MAX_VARIANTS, len(ranked_here()) or 1)  # native: 1
        assert crashes == paths  # one runner per path, each tried once
        assert daemon.chat(max_tokens=4).status_code == 503


def test_a_runner_dying_before_its_first_decode_is_diagnosed_and_avoided(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    healthy = best_path_here()
    if healthy[1]:
        after = (best_variant(), False)
    elif llama_backends.is_portable_build():  # the next variant, extra buffer types on again
        after = (ranked_here()[1], True)
    else:
        pytest.skip("a native build whose extra buffer types crash has no second path")
    with DaemonProcess(home) as daemon:
        status = daemon.wait_until_model("ready")
        assert status.info is not None
        assert (status.info.cpu_variant, status.info.extra_buffers) == healthy
        # As llama.cpp's AMX kernels kill a runner on its first request.
        assert status.pid is not None
        os.kill(status.pid, signal.SIGSEGV)
        restarted = daemon.wait_until_model("ready", timeout=60)
        while restarted.pid == status.pid:
            restarted = daemon.wait_until_model("ready", timeout=60)
        assert "died before its first decode finished" in (restarted.last_error or "")
        assert engine_path.kernel_names(healthy) in (restarted.last_error or "")
        # The path it ran is charged: the restart was checked again without it.
        assert restarted.info is not None
        assert (restarted.info.cpu_variant, restarted.info.extra_buffers) == after
        assert daemon.chat(max_tokens=4).status_code == 200
        stored = json.loads((home / "data" / "engine-checks.json").read_text())
        (entry,) = stored.values()
        assert list(healthy) in entry["crashed"]
        # After a decode, a crash is not blamed on the kernels.
        assert restarted.pid is not None
        os.kill(restarted.pid, signal.SIGSEGV)
        psutil.wait_procs([psutil.Process(restarted.pid)], timeout=10)
        later = daemon.wait_until_model("ready", timeout=60)
        while later.pid == restarted.pid:
            later = daemon.wait_until_model("ready", timeout=60)
        assert "first decode" not in (later.last_error or "")


def test_an_unknown_cpu_variant_is_a_clear_load_error(tmp_path: Path) -> None:
    if not llama_backends.is_portable_build():
        pytest.skip("a native build ignores cpu_variant")
    env = {"LOCALSERVE_CPU_VARIANT": "nehalem"}
    with DaemonProcess(tmp_path / "home", env=env) as daemon:
        status = daemon.wait_until_model("failed")
        assert "No CPU variant 'nehalem' in this build" in (status.last_error or "")


def test_a_first_start_is_checked_by_its_runner_without_a_check_child(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = first_runner_survives_env()  # where the AMX kernels crash: without them
    with DaemonProcess(home, env=env) as daemon:
        info = daemon.wait_until_model("ready").info
        assert info is not None
        assert (info.cpu_variant, info.extra_buffers) == best_path_here()
        wanted = "extra buffer types on" if info.extra_buffers else "off (weight_repack = off)"
        assert wanted in info.engine_note
        assert "checked by the runner" not in info.engine_note  # the verdict's note, once passed
        assert daemon.chat(max_tokens=4).status_code == 200
        log = daemon.output()
        assert "Engine check passed in the runner" in log
        assert "Engine check passed in " not in log.replace("passed in the runner", "")
        assert daemon.runner_log().count("engine check passed in this runner") == 1
    (entry,) = json.loads((home / "data" / "engine-checks.json").read_text()).values()
    assert entry["verdict"]["checked"] is True and not entry.get("crashed")
    if best_variant() is not None:
        assert entry["ranked"][0] == best_variant()  # as the runner ranked them
    with DaemonProcess(home, env=env) as again:  # the verdict is kept: no check of any kind
        again.wait_until_model("ready")
        assert "Engine check passed" not in again.output()
        assert again.runner_log().count("engine check passed") == 1  # the first start's


@pytest.mark.skipif(
    not (engine_path.has_amx() and llama_backends.is_portable_build()),
    reason="needs a CPU with AMX and the portable build's sapphirerapids kernels",
)
def test_the_amx_kernels_decode_as_the_others_do_where_the_cpu_has_amx() -> None:
    """They died of SIGILL at their first tile instruction until packaging/build_engine.py
    mended the GCC bug that dropped their tile configuration; a wheel built without that patch
    fails here on such a CPU."""
    with_amx, without = best_kernels_check(True), best_kernels_check(False)
    assert with_amx.crash is None, f"died of {with_amx.crash}: {with_amx.log_tail}"
    assert with_amx.passed and without.passed
    assert with_amx.facts["cpu_variant"] == "sapphirerapids"
    assert with_amx.facts["text"] == without.facts["text"] != ""
