"""The process helpers in localserve/program.py."""

from __future__ import annotations

import gc
import os
import subprocess
import sys


def test_garbage_collection_is_paused_for_start_up_then_frozen_and_resumed() -> None:
    # In a child: freezing is for good, and this test process should stay as it is.
    code = (
        "import gc\n"
        "from localserve.program import pause_garbage_collection, resume_garbage_collection\n"
        "pause_garbage_collection()\n"
        "assert not gc.isenabled()\n"
        "import localserve.api.requests\n"
        "resume_garbage_collection()\n"
        "assert gc.isenabled()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert gc.isenabled()


def test_a_lean_start_sets_single_threaded_blas_and_no_pydantic_plugins_unless_set() -> None:
    code = (
        "import os\n"
        "from localserve.program import lean_start_environment\n"
        "lean_start_environment()\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['PYDANTIC_DISABLE_PLUGINS'])\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYDANTIC_DISABLE_PLUGINS"}
    env["OPENBLAS_NUM_THREADS"] = "4"  # the user's choice is kept
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4", "1"]
