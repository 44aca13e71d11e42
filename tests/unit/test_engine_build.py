"""`make setup` builds the llama.cpp this machine can use: the detection seam, every branch."""

from __future__ import annotations

import importlib.util
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_engine() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_engine", ROOT / "packaging" / "build_engine.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_engine"] = module
    spec.loader.exec_module(module)
    return module


def test_cuda_needs_both_the_toolkit_and_a_gpu() -> None:
    engine = build_engine()
    cuda = engine.choose_build(None, "/usr/local/cuda/bin/nvcc", True, "Linux", "x86_64")
    assert (cuda.backend, cuda.cmake_args) == ("cuda", "-DGGML_CUDA=on")
    # A toolkit without a GPU (CI machines have nvcc) builds the portable CPU engine.
    toolkit_only = engine.choose_build(None, "/usr/local/cuda/bin/nvcc", False, "Linux", "x86_64")
    assert toolkit_only.backend == "cpu-portable"
    assert "no NVIDIA GPU" in toolkit_only.reason
    gpu_only = engine.choose_build(None, None, True, "Linux", "x86_64")
    assert gpu_only.backend == "cpu-portable"
    assert "no CUDA toolkit" in gpu_only.reason


def test_each_platform_gets_its_build() -> None:
    engine = build_engine()
    portable = engine.choose_build(None, None, False, "Linux", "x86_64")
    assert portable.cmake_args == (
        "-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
    )
    assert engine.choose_build(None, None, False, "Windows", "AMD64").backend == "cpu-portable"
    assert engine.choose_build(None, None, False, "Darwin", "arm64").backend == "metal"
    assert engine.choose_build(None, None, False, "Linux", "aarch64").backend == "cpu-native"
    assert engine.choose_build(None, None, False, "Darwin", "x86_64").backend == "cpu-native"


def test_cmake_args_override_everything_and_key_the_wheel_cache() -> None:
    engine = build_engine()
    custom = engine.choose_build(" -DGGML_VULKAN=on ", "/x/nvcc", True, "Linux", "x86_64")
    assert (custom.backend, custom.cmake_args) == ("custom", "-DGGML_VULKAN=on")
    other = engine.choose_build("-DGGML_VULKAN=off", None, False, "Linux", "x86_64")
    # pip's cache would hand one build to the other; ours keeps them apart.
    assert custom.key("0.3.36") != other.key("0.3.36")
    assert custom.key("0.3.36") != custom.key("0.3.37")


def test_the_installed_engine_is_the_one_detected_here() -> None:
    engine = build_engine()
    marker = engine.installed_marker()
    assert marker, "make setup records the engine it installed in the venv"
    assert marker["key"].startswith(engine.pinned_version() + "-")


def test_source_patches_change_the_wheel_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = build_engine()
    portable = engine.choose_build(None, None, False, "Linux", "x86_64")
    patched = portable.key("0.3.36")
    monkeypatch.setattr(engine, "SOURCE_PATCHES", ())
    # A wheel built before a patch was added is not taken for one built with it.
    assert portable.key("0.3.36") != patched


def test_a_source_patch_replaces_its_text_and_stops_where_it_no_longer_fits(
    tmp_path: Path,
) -> None:
    engine = build_engine()
    (patch,) = [p for p in engine.SOURCE_PATCHES if p.path.endswith("amx/mmq.cpp")]
    source = tmp_path / "llama_cpp_python-0.3.36"
    mmq = source / patch.path
    mmq.parent.mkdir(parents=True)
    mmq.write_text("inline void ggml_tile_config_init(void) {\n" + patch.old + "}\n")
    engine.apply_source_patches(source)
    mended = mmq.read_text()
    assert mended == "inline void ggml_tile_config_init(void) {\n" + patch.new + "}\n"
    assert '"m"(tc)' in mended  # the whole config is the asm's operand, not 8 bytes of it
    # A llama.cpp that no longer has the line stops the build with the reason.
    mmq.write_text("inline void ggml_tile_config_init(void) {\n    load(&tc);\n}\n")
    with pytest.raises(SystemExit, match="a source patch no longer applies"):
        engine.apply_source_patches(source)


def test_the_sdist_unpacks_to_its_top_folder(tmp_path: Path) -> None:
    engine = build_engine()
    top = tmp_path / "pkg" / "llama_cpp_python-0.3.36"
    (top / "vendor").mkdir(parents=True)
    (top / "vendor" / "file.txt").write_text("llama.cpp")
    archive = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    unpacked = engine.unpack_sdist(archive, tmp_path / "out")
    assert unpacked.name == top.name
    assert (unpacked / "vendor" / "file.txt").read_text() == "llama.cpp"
