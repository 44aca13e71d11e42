"""The process helpers in localserve/program.py."""

from __future__ import annotations

import gc
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
