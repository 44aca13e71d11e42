"""Build and install llama-cpp-python for the machine at hand (`make setup` runs this).

Which llama.cpp, unless ``CMAKE_ARGS`` says otherwise:

- **CUDA** where the CUDA toolkit (``nvcc``) and an NVIDIA GPU are both here;
- **Metal** on Apple silicon (llama.cpp's default there);
- **portable CPU** on other x86-64 machines: one CPU backend per instruction-set level, the best
  one for the CPU loaded at run time (``GGML_BACKEND_DL`` + ``GGML_CPU_ALL_VARIANTS``), as
  llama.cpp's release builds do. It runs on any x86-64 CPU, so the packaged app built from it
  does too, and localserve can step around kernels that crash on a CPU (the engine check);
- **native CPU** elsewhere (``-march=native``).

Before it is built, llama-cpp-python's sdist is unpacked and mended where a compiler we build
with gets llama.cpp wrong (``SOURCE_PATCHES``; each says why).

pip's own wheel cache does not know about ``CMAKE_ARGS`` (it would hand a CPU wheel to a CUDA
request), so the wheel is built once per (version, arguments) into a cache of ours
(``$LOCALSERVE_ENGINE_CACHE``, default ``~/.cache/localserve/engine``) and installed from there;
the venv remembers which one it holds, so a second `make setup` does nothing.

    python packaging/build_engine.py [--dry-run]       # with the venv's python

Standard library only: it runs before localserve is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORTABLE_CPU_ARGS = "-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
CUDA_ARGS = "-DGGML_CUDA=on"
MARKER = "localserve-engine.json"


@dataclass(frozen=True)
class SourcePatch:
    """One exact replacement in the unpacked sdist, made before it is built."""

    path: str  # inside the sdist
    old: str  # must occur exactly once, so that a new llama.cpp cannot slip past it
    new: str
    why: str


SOURCE_PATCHES = (
    SourcePatch(
        path="vendor/llama.cpp/ggml/src/ggml-cpu/amx/mmq.cpp",
        old="    _tile_loadconfig(&tc);\n",
        new=(
            "#if defined(__GNUC__)\n"
            '    __asm__ volatile("ldtilecfg %0" : : "m"(tc));  // localserve: all 64 bytes\n'
            "#else\n"
            "    _tile_loadconfig(&tc);\n"
            "#endif\n"
        ),
        why=(
            "GCC before 14 declares _tile_loadconfig as reading 8 bytes of the tile config,"
            " so it drops the stores of the tiles' rows and widths; the AMX kernels then die of"
            " SIGILL at their first tile instruction (llama.cpp pull request 26954)"
        ),
    ),
)


@dataclass(frozen=True)
class EngineBuild:
    backend: str  # cuda, metal, cpu-portable, cpu-native, custom
    cmake_args: str
    reason: str

    def key(self, version: str) -> str:
        patches = "".join(patch.path + patch.old + patch.new for patch in SOURCE_PATCHES)
        digest = hashlib.sha256((self.cmake_args + patches).encode()).hexdigest()[:10]
        return f"{version}-{self.backend}-{digest}"


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU with its driver loaded (a toolkit alone, as on CI machines, is not one)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for folder in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if folder and (Path(folder) / "bin" / "nvcc").is_file():
            return str(Path(folder) / "bin" / "nvcc")
    return None


def choose_build(
    cmake_args: str | None,
    nvcc: str | None,
    gpu: bool,
    system: str,
    machine: str,
) -> EngineBuild:
    """The detection seam: every input is passed in, so tests cover each branch anywhere."""
    if cmake_args and cmake_args.strip():
        return EngineBuild("custom", cmake_args.strip(), "CMAKE_ARGS is set")
    if system == "Darwin" and machine == "arm64":
        return EngineBuild("metal", "", "Apple silicon: Metal")
    if nvcc and gpu:
        return EngineBuild("cuda", CUDA_ARGS, f"NVIDIA GPU and CUDA toolkit ({nvcc})")
    note = ""
    if gpu:
        note = "; an NVIDIA GPU is here but no CUDA toolkit (nvcc): install it for GPU support"
    elif nvcc:
        note = "; a CUDA toolkit is here but no NVIDIA GPU"
    if machine.lower() in ("x86_64", "amd64") and system in ("Linux", "Windows"):
        return EngineBuild(
            "cpu-portable",
            PORTABLE_CPU_ARGS,
            "x86-64: every CPU variant, picked at run time" + note,
        )
    return EngineBuild("cpu-native", "", "CPU, built for this machine" + note)


def pinned_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"llama-cpp-python==([^"]+)"', text)
    if not match:
        raise SystemExit("pyproject.toml does not pin llama-cpp-python")
    return match[1]


def cache_root() -> Path:
    configured = os.environ.get("LOCALSERVE_ENGINE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "localserve" / "engine"


def installed_marker() -> dict[str, str]:
    try:
        data = json.loads((Path(sys.prefix) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def llama_cpp_installed(version: str) -> bool:
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python") == version
    except metadata.PackageNotFoundError:
        return False


def apply_source_patches(source: Path) -> None:
    """Mend the unpacked sdist in ``source``; stop if a patch no longer fits it."""
    for patch in SOURCE_PATCHES:
        file = source / patch.path
        text = file.read_bytes().decode("utf-8")  # bytes: line endings stay as they are
        if text.count(patch.old) != 1:
            raise SystemExit(f"{patch.path} has changed: a source patch no longer applies")
        file.write_bytes(text.replace(patch.old, patch.new).encode("utf-8"))
        print(f"  mended {patch.path}: {patch.why}", flush=True)


def unpack_sdist(archive: Path, into: Path) -> Path:
    """The sdist's top folder, unpacked under ``into``."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)  # noqa: S202 - the sdist comes from PyPI through pip
    (top,) = [path for path in into.iterdir() if path.is_dir()]
    return top


def build_wheel(version: str, cmake_args: str, folder: Path) -> None:
    """Download the sdist, mend it and build its wheel into ``folder``."""
    with tempfile.TemporaryDirectory(prefix="localserve-engine-") as work:
        downloads = Path(work) / "sdist"
        pip(
            "download", "--no-deps", "--no-binary", ":all:", "-d", str(downloads),
            f"llama-cpp-python=={version}",
        )  # fmt: skip
        (archive,) = downloads.glob("llama_cpp_python-*.tar.gz")
        source = unpack_sdist(archive, Path(work) / "source")
        apply_source_patches(source)
        env = {**os.environ, "CMAKE_ARGS": cmake_args}
        pip("wheel", "--no-deps", "--no-cache-dir", "-w", str(folder), str(source), env=env)


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "pip", *args, "--quiet", "--progress-bar", "off"]
    if subprocess.run(command, env=env).returncode != 0:
        raise SystemExit("pip failed: " + " ".join(args))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="say what would be built, only")
    options = parser.parse_args()
    version = pinned_version()
    build = choose_build(
        os.environ.get("CMAKE_ARGS"),
        find_nvcc(),
        nvidia_gpu_present(),
        platform.system(),
        platform.machine(),
    )
    key = build.key(version)
    print(f"llama.cpp engine: {build.backend} ({build.reason})")
    if options.dry_run:
        print(f"  CMAKE_ARGS={build.cmake_args!r}; wheel cache {cache_root() / key}")
        return 0
    if installed_marker().get("key") == key and llama_cpp_installed(version):
        return 0
    folder = cache_root() / key
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        minutes = "about 15 minutes" if build.backend == "cpu-portable" else "about 5 minutes"
        print(
            f"  building llama-cpp-python {version} from source, once ({minutes} on 2 cores;"
            f" kept in {folder})",
            flush=True,
        )
        started = time.monotonic()
        build_wheel(version, build.cmake_args, folder)
        print(f"  built in {(time.monotonic() - started) / 60:.1f} min")
        wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    pip("install", "--no-deps", "--force-reinstall", str(wheels[-1]))
    marker = {"key": key, "backend": build.backend, "cmake_args": build.cmake_args}
    (Path(sys.prefix) / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    print(f"  installed {wheels[-1].name} ({build.backend})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
