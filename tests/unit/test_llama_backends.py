"""The installed llama.cpp build: its CPU variants, as llama.cpp itself ranks them here."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from localserve.runner import llama_backends


def test_a_portable_build_ranks_its_variants_for_this_cpu() -> None:
    if not llama_backends.is_portable_build():
        pytest.skip("this llama.cpp is a native build (CMAKE_ARGS set, CUDA or not x86-64)")
    variants = llama_backends.cpu_variants()
    assert {"x64", "haswell", "sapphirerapids"} <= set(variants)
    scores = llama_backends.variant_scores()
    ranked = llama_backends.ranked_variants(scores)
    assert ranked[0] == max(scores, key=lambda name: scores[name])
    assert ranked[-1] == "x64"  # the baseline runs on every x86-64 CPU
    assert all(scores[name] > 0 for name in ranked)
    amx = "amx_tile" in Path("/proc/cpuinfo").read_text()
    assert ("sapphirerapids" in ranked) == amx
    assert llama_backends.build_summary()["build"] == "portable"


def test_loading_an_unknown_variant_says_which_exist() -> None:
    if not llama_backends.is_portable_build():
        pytest.skip("this llama.cpp is a native build")
    with pytest.raises(llama_backends.BackendLoadError, match=r"No CPU variant 'nehalem'.*haswell"):
        llama_backends.load_backends("nehalem")


def test_the_build_fingerprint_is_stable() -> None:
    first = llama_backends.build_id()
    llama_backends.build_id.cache_clear()
    assert llama_backends.build_id() == first
    assert len(first) == 16


def test_a_gpu_backend_linked_into_libggml_is_not_loaded_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A native CUDA build ships libggml-cuda.so linked into libggml and registered at import;
    only a GGML_BACKEND_DL build's libraries are loaded by hand. (Seen on an H100: loading the
    native one failed and stopped the daemon.) libggml-base stands in for the linked kind."""
    linked = llama_backends.library_dir() / "libggml-base.so.0"
    assert not llama_backends.is_loadable_backend(linked)
    if llama_backends.is_portable_build():
        assert llama_backends.is_loadable_backend(llama_backends.cpu_variants()["x64"])
    monkeypatch.setattr(llama_backends, "gpu_backend_libraries", lambda: {"cuda": linked})
    llama_backends.load_gpu_backends.cache_clear()
    try:
        llama_backends.load_gpu_backends()  # skips it instead of failing
    finally:
        llama_backends.load_gpu_backends.cache_clear()


def test_a_rebuilt_library_changes_the_build_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libllama.so").write_bytes(b"one build")
    (lib / "libggml-base.so").write_bytes(b"base")
    monkeypatch.setattr(llama_backends, "library_dir", lambda: lib)
    monkeypatch.setattr(llama_backends, "backend_dirs", lambda: [lib])
    llama_backends.build_id.cache_clear()
    try:
        first = llama_backends.build_id()
        (lib / "libllama.so").write_bytes(b"another build!")
        llama_backends.build_id.cache_clear()
        assert llama_backends.build_id() != first
    finally:
        llama_backends.build_id.cache_clear()


def test_a_process_keeps_the_cpu_variant_it_loaded_first() -> None:
    """llama.cpp keeps using the first CPU backend registered: asking again for it does
    nothing, asking for another is refused (runner/anticipation.py then starts a new runner).
    In a child process: the registry is the process's."""
    ranked = llama_backends.ranked_variants(llama_backends.variant_scores())
    if len(ranked) < 2:
        pytest.skip("one CPU variant (or a native build): nothing to switch to")
    code = (
        "from localserve.runner import llama_backends as b\n"
        f"b.load_backends({ranked[0]!r}); b.load_backends({ranked[0]!r})\n"
        "print(sum(device.kind == 'CPU' for device in b.devices()))\n"
        f"try:\n    b.load_backends({ranked[1]!r})\n"
        "except b.OtherVariantLoaded as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    cpu_devices, refusal = result.stdout.strip().splitlines()
    assert cpu_devices == "1"
    assert ranked[0] in refusal and ranked[1] in refusal


def test_a_portable_build_without_gpu_files_answers_without_loading_libllama() -> None:
    """The daemon asks whether it can offload before its first runner's handshake: a portable
    build with no GPU backend file says no without libllama, as libllama itself would."""
    if not llama_backends.is_portable_build() or llama_backends.gpu_backend_libraries():
        pytest.skip("this llama.cpp build has GPU backends or is a native build")
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps")
    ask = (
        "from localserve.runner import llama_backends as b\n"
        "answer = b.gpu_offload_supported()\n"
        "print(answer, 'libllama' in open('/proc/self/maps').read())\n"
    )
    result = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
    llama = llama_backends._libllama().llama_supports_gpu_offload
    llama.restype = ctypes.c_bool
    assert llama() is False  # llama.cpp's own answer, once it is loaded
