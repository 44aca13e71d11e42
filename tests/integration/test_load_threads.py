"""How many threads llama.cpp's load may take (``llama_backends.load_threads``): its AMX weight
repacking opens one OpenMP region per tensor at OpenMP's default size, whose threads spin
between tensors, on every core, while a starting runner and its daemon import on the same ones.
A load takes all the cores but one (``cores_for_a_load``); the decodes keep the thread count
they ask for. Each check runs in a child process: OpenMP's settings and threads are the
process's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.model_files import starter_path

LOAD_BACKENDS = (
    "from localserve.runner import llama_backends as b\n"
    "best = b.best_variant(b.ranked_variants(b.variant_scores()))"
    " if b.is_portable_build() else None\n"
    "b.load_backends(best)\n"
)


def run_child(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_BACKENDS + code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_the_default_openmp_size_is_set_for_the_block_and_put_back() -> None:
    code = (
        "runtime = b._openmp_runtime()\n"
        "if runtime is None:\n"
        "    print('none')\n"
        "else:\n"
        "    before = runtime.omp_get_max_threads()\n"
        "    with b.load_threads(1):\n"
        "        inside = runtime.omp_get_max_threads()\n"
        "    print(before, inside, runtime.omp_get_max_threads())\n"
    )
    answer = run_child(code)
    if answer == ["none"]:
        pytest.skip("this llama.cpp build's CPU backend does not use GCC's OpenMP")
    before, inside, after = map(int, answer)
    assert inside == 1
    assert after == before


def test_a_model_load_starts_no_more_threads_than_its_share_of_the_cores() -> None:
    """The starter's load with extra buffer types (AMX repacking, where the CPU has AMX)
    starts at most ``cores_for_a_load() - 1`` OpenMP threads besides its own: none on 2 cores.
    With OpenMP's default there was one more, spinning through the whole load."""
    code = (
        "import os\n"
        "from pathlib import Path\n"
        "from localserve.runner.model_file import open_model\n"
        "tasks = lambda: len(os.listdir('/proc/self/task'))\n"
        "before = tasks()\n"
        f"open_model(Path({str(starter_path())!r}), 0, True)\n"
        "print(tasks() - before, b.cores_for_a_load())\n"
    )
    started, share = map(int, run_child(code))
    assert started <= share - 1
