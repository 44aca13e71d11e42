"""What llama.cpp does on the CPU these tests run on, found out for real, once per session.

llama.cpp's extra buffer types are its AMX kernels on Sapphire Rapids class Xeons, and there
they die of SIGILL at their first tile instruction when GCC before 14 built them (our engine
build mends that, ``packaging/build_engine.py``; a wheel from elsewhere may not be mended). The
engine check handles that, but a test that expects the best path to be the one with extra
buffer types, or a first runner that survives its own check, holds only where they decode.
Those tests ask here what to expect.
"""

from __future__ import annotations

import functools
import os

from localserve.daemon.engine_path import CHECK_TIMEOUT_S, CheckOutcome, run_check
from localserve.runner import llama_backends
from localserve.runner.engine_check import CRASH_ENV, CheckPlan
from tests.helpers.model_files import starter_path

GENERATED = 8  # greedy tokens each check writes back, to compare paths by


@functools.cache
def best_kernels_check(extra_buffers: bool) -> CheckOutcome:
    """One engine check child on the starter model with the best CPU kernels here, extra
    buffer types on or off, writing back ``GENERATED`` greedy tokens: the real CPU, not a
    test's simulated crash."""
    best = "best" if llama_backends.is_portable_build() else None
    plan = CheckPlan(str(starter_path()), best, extra_buffers, gpu_layers=0, generate=GENERATED)
    simulated = os.environ.pop(CRASH_ENV, None)
    try:
        return run_check(plan, CHECK_TIMEOUT_S)
    finally:
        if simulated is not None:
            os.environ[CRASH_ENV] = simulated


def extra_buffers_decode_here() -> bool:
    """Whether the check with extra buffer types on decodes here; False when it dies of a
    signal."""
    outcome = best_kernels_check(extra_buffers=True)
    if outcome.crash is not None:
        return False
    assert outcome.passed, f"the engine check failed without a crash: {outcome.problem}"
    return True


def first_runner_survives_env() -> dict[str, str]:
    """Settings under which a fresh home's first runner passes its own engine check here: none
    where extra buffer types decode, ``weight_repack = off`` where they crash."""
    return {} if extra_buffers_decode_here() else {"LOCALSERVE_WEIGHT_REPACK": "off"}
