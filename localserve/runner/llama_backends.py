"""The llama.cpp build at hand, and loading its backends: the one place that knows both.

Two kinds of build exist:

- a **portable** build (``GGML_BACKEND_DL`` with ``GGML_CPU_ALL_VARIANTS``): what `make setup`
  builds on x86-64 and what the packaged app ships. It holds one CPU backend per instruction-set
  level (``libggml-cpu-haswell.so`` ... ``libggml-cpu-sapphirerapids.so``) and loads none by
  itself, so llama.cpp says "no backends are loaded" until we load one. Each variant says, through
  its ``ggml_backend_score``, whether this CPU can run it and how well; we load the best one the
  engine check (``engine_check.py``) did not see crash.
- a **native** build (one CPU backend compiled for the build machine, with CUDA or Metal where
  `make setup` found them): its backends are built in and registered at import.

Loading goes through ctypes into the very ``libggml`` that ``libllama`` linked: wheels store the
library's symlinks as copies, and each copy keeps a backend registry of its own.

Extra buffer types (``llama_model_params.use_extra_bufts``) are llama.cpp's other weight layouts
for the CPU: AMX tiles on Intel Xeons, repacked Q4_0/IQ4_NL blocks elsewhere. llama.cpp's AMX
kernels die of SIGILL on Sapphire Rapids class CPUs when GCC before 14 built them (the build
that ``packaging/build_engine.py`` makes is mended; other wheels may not be), so whether they
are used is decided by the engine check too.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

log = logging.getLogger(__name__)

_VARIANT_NAME = re.compile(r"^(?:lib)?ggml-cpu-([A-Za-z0-9_.]+?)\.(?:so|dll|dylib)$")
_GPU_BACKEND_NAME = re.compile(
    r"^(?:lib)?ggml-(cuda|hip|metal|vulkan|sycl|musa|opencl)\.(?:so|dll|dylib)$"
)
GGML_BACKEND_DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator"}
# The CPU variant this process loaded, once it has: one per process, like the registry of
# llama.cpp's backends that it mirrors.
_LOADED_CPU_VARIANT: list[str] = []


class BackendLoadError(RuntimeError):
    """A backend library could not be loaded; the message says which and why."""


class OtherVariantLoaded(BackendLoadError):
    """This process loaded another CPU variant already, and llama.cpp keeps using the first
    one registered: only a new process can run this one."""


@dataclass(frozen=True)
class Device:
    """One device llama.cpp can run on, as ``ggml_backend_dev_*`` describes it."""

    name: str
    description: str
    kind: str  # CPU, GPU, iGPU, accelerator

    def describe(self) -> str:
        return f"{self.name} ({self.description})" if self.description else self.name


def package_dir() -> Path:
    """The ``llama_cpp`` package folder, found without importing it (importing loads the
    libraries, which the daemon does not need for facts about the build)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise BackendLoadError("llama-cpp-python is not installed.")
    return Path(next(iter(spec.submodule_search_locations)))


def library_dir() -> Path:
    return package_dir() / "lib"


def backend_dirs() -> list[Path]:
    """Where a build's loadable backends may lie: beside libllama, or in the ``bin`` folder
    that upstream's install puts them in (``site-packages/bin``, or the app bundle's own)."""
    lib = library_dir()
    candidates = [lib, lib.parent.parent / "bin"]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "bin")
    seen: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder not in seen:
            seen.append(folder)
    return seen


def _libraries_matching(pattern: re.Pattern[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in backend_dirs():
        for path in sorted(folder.iterdir()):
            match = pattern.match(path.name)
            if match and match[1] not in found:
                found[match[1]] = path
    return found


def cpu_variants() -> dict[str, Path]:
    """The CPU backend variants of a portable build, by name (``haswell``...); empty for a
    native build."""
    return _libraries_matching(_VARIANT_NAME)


def gpu_backend_libraries() -> dict[str, Path]:
    """Loadable GPU backends of a ``GGML_BACKEND_DL`` build (none in a native build, whose GPU
    backend is built into libggml)."""
    return _libraries_matching(_GPU_BACKEND_NAME)


def is_portable_build() -> bool:
    return bool(cpu_variants())


@functools.cache
def build_id() -> str:
    """A fingerprint of the installed llama.cpp libraries: a verdict about this build (the
    engine check) holds for exactly these files.

    Taken from each file's name, size and modification time, not its bytes: hashing the 40 MB
    of a portable build took 28 ms of every daemon start. A rebuilt or reinstalled library gets
    a new time, so its build is checked again.
    """
    digest = hashlib.sha256()
    folders = [library_dir(), *backend_dirs()]
    files = sorted(
        {path for folder in folders for path in folder.glob("*ggml*")}
        | {path for path in library_dir().glob("*llama*")}
    )
    for path in files:
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@functools.cache
def _libllama() -> ctypes.CDLL:
    """libllama, loaded as ``llama_cpp`` loads it (globally, so that its libggml is the one
    ``llama_cpp`` will use), without importing ``llama_cpp``: that import (numpy, Jinja, the
    high-level classes: 90 ms) is the runner's to pay, not the daemon's, which only asks about
    the build."""
    folder = library_dir()
    names = ("libllama.so", "libllama.dylib", "llama.dll", "libllama.dll")
    path = next((folder / name for name in names if (folder / name).exists()), None)
    if path is None:
        raise BackendLoadError(f"No libllama in {folder}.")
    if sys.platform == "win32":
        os.add_dll_directory(str(folder))
        return ctypes.CDLL(str(path), winmode=ctypes.RTLD_GLOBAL)
    return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def import_binding_alone() -> None:
    """Make ``llama_cpp`` the package of the C binding (``llama_cpp.llama_cpp``) alone, for
    this process, unless it is imported already. A runner calls this first thing.

    The package's ``__init__`` imports its high-level ``Llama`` too (``llama.py``: numpy,
    Jinja, diskcache, the chat formats; 0.15 s before a load could start, 60 ms of it never
    used by a runner, which drives the binding itself). Here the package module is made from
    its spec without running ``__init__``, and gets what ``from .llama_cpp import *`` would
    give it; its other modules (``_internals``, ``mtmd_cpp``, ``llama_grammar``) import as
    usual when asked for.
    """
    if "llama_cpp" in sys.modules:
        return
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.loader is None:
        raise BackendLoadError("llama-cpp-python is not installed.")
    package = importlib.util.module_from_spec(spec)
    sys.modules["llama_cpp"] = package
    try:
        binding = importlib.import_module("llama_cpp.llama_cpp")
    except BaseException:
        del sys.modules["llama_cpp"]
        raise
    package.__dict__.update(
        (name, value) for name, value in vars(binding).items() if not name.startswith("_")
    )


@functools.cache
def _libggml() -> ctypes.CDLL:
    """The libggml that libllama linked, with the registry functions typed."""
    _libllama()  # loads libggml with it
    names = ("libggml.so.0", "libggml.so", "libggml.dylib", "ggml.dll")
    path = next((library_dir() / name for name in names if (library_dir() / name).exists()), None)
    if path is None:
        raise BackendLoadError(f"No libggml in {library_dir()}.")
    lib = ctypes.CDLL(str(path))
    lib.ggml_backend_load.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_load.restype = ctypes.c_void_p
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    return lib


def logits_address() -> Callable[[Any, int], int | None]:
    """``llama_get_logits_ith(ctx, i)`` answering the row's address as an int (None for NULL),
    where ``llama_cpp``'s binding answers a ctypes pointer that numpy must wrap anew for each
    token: about 40 us of Python a token, right after a decode has pushed the interpreter's
    data out of the caches. A function object of its own, so ``llama_cpp``'s stays typed, from
    the very library ``llama_cpp`` loaded (which ``LLAMA_CPP_LIB_PATH`` may have moved)."""
    from llama_cpp import llama_cpp as binding

    function = binding._lib["llama_get_logits_ith"]
    function.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    function.restype = ctypes.c_void_p
    return cast(Callable[[Any, int], "int | None"], function)


def cores_for_a_load() -> int:
    """The cores llama.cpp may spread a model's load over: all this process may run on but
    one, which a starting runner's own imports (and its daemon's) keep busy meanwhile."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        available = os.cpu_count() or 1
    return max(1, available - 1)


def _openmp_runtime() -> ctypes.CDLL | None:
    """GCC's OpenMP runtime as this process has it loaded (a CPU backend built with OpenMP
    links it), or None: none loaded (yet), another runtime, or no /proc to tell."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            fields = [line.split(maxsplit=5) for line in maps if "/libgomp" in line]
        paths = sorted({f[5].strip() for f in fields if len(f) == 6 and f[5].startswith("/")})
        # Loaded already, so the same library; one replaced on disk since shows "(deleted)".
        return ctypes.CDLL(paths[0]) if paths else None
    except OSError:
        return None


@contextlib.contextmanager
def load_threads(count: int) -> Iterator[None]:
    """OpenMP work that does not say how many threads it wants, started from this thread
    inside the block, gets ``count``. At a load, that is llama.cpp's repacking of weights for
    its AMX kernels (``parallel_for`` in ``ggml-cpu/amx/common.h``): one parallel region per
    tensor, whose threads spin between tensors. On 2 cores, while the runner's and the
    daemon's imports ran, those spins took about 120 ms of CPU from them (perf, a fresh-home
    launch); beside two busy processes the starter's load took 0.30-0.77 s with OpenMP's
    default of 2 threads and 0.21-0.37 s with 1."""
    runtime = _openmp_runtime()
    if runtime is None:
        yield
        return
    before = int(runtime.omp_get_max_threads())
    runtime.omp_set_num_threads(count)
    try:
        yield
    finally:
        runtime.omp_set_num_threads(before)


def log_from_c() -> None:
    """llama.cpp's log lines to stderr through its own C default, not through the Python
    callback llama-cpp-python sets when ``llama_cpp`` is imported (call this after that
    import). The lines stay the same; the callback took the GIL for each of the ~1,100 a
    runner's start writes (most as its contexts are made), while its main thread imports."""
    _libllama().llama_log_set(None, None)


def variant_scores() -> dict[str, int]:
    """Each CPU variant's own verdict on this CPU (``ggml_backend_score``): 0 means it cannot
    run here, higher is better. This is how llama.cpp's ``ggml_backend_load_best`` ranks them;
    opening a variant to ask runs none of its kernels."""
    scores: dict[str, int] = {}
    _libggml()  # libggml-base must be loaded before a variant can be opened
    for name, path in cpu_variants().items():
        try:
            variant = ctypes.CDLL(str(path))
            score = variant.ggml_backend_score
        except (OSError, AttributeError):
            scores[name] = 0
            continue
        score.restype = ctypes.c_int
        scores[name] = int(score())
    return scores


def ranked_variants(scores: dict[str, int]) -> list[str]:
    """The variants this CPU can run, best first."""
    usable = [name for name, score in scores.items() if score > 0]
    return sorted(usable, key=lambda name: (-scores[name], name))


def best_variant(ranked: list[str]) -> str:
    """The first of ``ranked`` (``ranked_variants``); BackendLoadError when none runs here."""
    if not ranked:
        raise BackendLoadError("No CPU variant of llama.cpp runs here.")
    return ranked[0]


def best_variant_here() -> tuple[str, list[str]]:
    """The best CPU variant for this CPU, and all it can run, best first (a trial path's
    "best", as its runner reports them); BackendLoadError when none runs here."""
    ranked = ranked_variants(variant_scores())
    return best_variant(ranked), ranked


def load_backends(cpu_variant: str | None) -> None:
    """Make llama.cpp ready to load models in this process.

    A portable build needs ``cpu_variant`` (one of ``cpu_variants()``) and gets any GPU
    backend found beside it; a native build has its backends built in and takes None. Asking
    again for the variant loaded already does nothing; for another, OtherVariantLoaded.
    """
    variants = cpu_variants()
    if cpu_variant is None:
        if variants:
            raise BackendLoadError("This llama.cpp build needs a CPU variant to be chosen.")
        return
    if cpu_variant not in variants:
        known = ", ".join(sorted(variants)) or "none: this build has its CPU backend built in"
        raise BackendLoadError(f"No CPU variant '{cpu_variant}' in this build (it has {known}).")
    loaded = _LOADED_CPU_VARIANT
    if loaded and loaded[0] != cpu_variant:
        raise OtherVariantLoaded(
            f"This process runs llama.cpp's {loaded[0]} CPU kernels already, not {cpu_variant}."
        )
    load_gpu_backends()
    if not loaded:
        _load(cpu_variant, variants[cpu_variant])
        loaded.append(cpu_variant)


def _load(name: str, path: Path) -> None:
    if not _libggml().ggml_backend_load(str(path).encode()):
        raise BackendLoadError(f"llama.cpp could not load its {name} backend from {path}.")


def is_loadable_backend(path: Path) -> bool:
    """Whether ``path`` is a backend to load (a ``GGML_BACKEND_DL`` build's), not one linked
    into libggml and registered at import, as a native CUDA build's ``libggml-cuda.so`` is."""
    try:
        return hasattr(ctypes.CDLL(str(path)), "ggml_backend_init")
    except OSError:
        return False


@functools.cache
def load_gpu_backends() -> None:
    """Load the GPU backends a ``GGML_BACKEND_DL`` build keeps apart (once per process)."""
    for name, path in gpu_backend_libraries().items():
        if is_loadable_backend(path):
            _load(name, path)


@functools.cache
def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, Vulkan...).

    Asks llama.cpp itself, loading a ``GGML_BACKEND_DL`` build's GPU libraries first. A
    portable build without any has its answer already: there, every backend is a file of its
    own, so with no GPU backend file nothing can offload, and the daemon need not load
    libllama to hear it (20 ms of its start, and 3.6 MB of RSS it would keep).
    """
    if is_portable_build() and not gpu_backend_libraries():
        return False
    try:
        load_gpu_backends()
    except BackendLoadError as exc:
        log.warning("GPU offload unavailable: %s", exc)
    supports = _libllama().llama_supports_gpu_offload
    supports.restype = ctypes.c_bool
    return bool(supports())


def build_summary() -> dict[str, object]:
    """The build, for ``localserve status`` and the control API."""
    variants = sorted(cpu_variants())
    return {
        "build": "portable" if variants else "native",
        "cpu_variants": variants,
        "gpu_backends": sorted(gpu_backend_libraries()),
    }


def devices() -> list[Device]:
    """The devices llama.cpp can use now (after ``load_backends``), GPUs first as it lists
    them."""
    lib = _libggml()
    found = []
    for index in range(lib.ggml_backend_dev_count()):
        device = lib.ggml_backend_dev_get(index)
        found.append(
            Device(
                name=(lib.ggml_backend_dev_name(device) or b"").decode(errors="replace"),
                description=(lib.ggml_backend_dev_description(device) or b"").decode(
                    errors="replace"
                ),
                kind=GGML_BACKEND_DEVICE_TYPES.get(lib.ggml_backend_dev_type(device), "other"),
            )
        )
    return found


@contextlib.contextmanager
def extra_buffer_types(enabled: bool) -> Iterator[None]:
    """Models loaded by ``llama_cpp.Llama`` inside this block use extra buffer types or not.

    ``Llama`` takes no such argument; it builds its parameters from
    ``llama_model_default_params``, which we wrap for the duration of the load.
    """
    import llama_cpp.llama_cpp as binding

    original = binding.llama_model_default_params

    def adjusted() -> object:
        params = original()
        params.use_extra_bufts = enabled
        return params

    binding.llama_model_default_params = adjusted
    try:
        yield
    finally:
        binding.llama_model_default_params = original
