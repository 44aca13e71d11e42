"""Small pure functions: detection seams, parsing, name handling."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from localserve.daemon.daemon import check_loopback_host
from localserve.errors import ConfigError, ModelNotFoundError
from localserve.hardware.devices import ALL_LAYERS, physical_cores, resolve_gpu_layers
from localserve.hub.library import Library
from localserve.hub.resolve import model_id_for, resolve_model
from localserve.hub.starter import STARTER_MODEL_ID, starter_model_path
from localserve.runner.text import held_back_length
from localserve.server.security import host_name, is_loopback_host


@pytest.mark.parametrize(
    ("setting", "gpu", "expected"),
    [
        ("auto", True, ALL_LAYERS),  # CUDA / Metal build: offload everything
        ("auto", False, 0),  # CPU-only build
        (20, True, 20),
        (20, False, 0),
        (-1, True, ALL_LAYERS),
        (0, True, 0),
    ],
)
def test_gpu_layers(setting: str | int, gpu: bool, expected: int) -> None:
    assert resolve_gpu_layers(setting, gpu) == expected


def test_physical_cores_is_positive() -> None:
    assert physical_cores() >= 1


@pytest.mark.parametrize(
    ("header", "name", "loopback"),
    [
        ("localhost:8080", "localhost", True),
        ("[::1]:11435", "::1", True),
        ("127.0.0.1", "127.0.0.1", True),
        ("app.localhost", "app.localhost", True),
        ("evil.example:80", "evil.example", False),
        ("127.0.0.1.evil.example", "127.0.0.1.evil.example", False),
        ("127.8.9.10:80", "127.8.9.10", True),
        ("", "", False),
    ],
)
def test_host_header_parsing(header: str, name: str, loopback: bool) -> None:
    assert host_name(header) == name
    assert is_loopback_host(header) is loopback


def test_dotted_names_starting_with_127_are_not_loopback() -> None:
    # A DNS name such as 127.0.0.1.evil.example can resolve anywhere.
    assert not is_loopback_host("127.0.0.1.evil.example")


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("hello wor", ("world",), 3),
        ("hello", ("world",), 0),
        ("abc</", ("</end>",), 2),
        ("abc", (), 0),
        ("xx", ("xyz", "x"), 1),
    ],
)
def test_stop_holdback(text: str, stops: tuple[str, ...], held: int) -> None:
    assert held_back_length(text, stops) == held


def test_model_ids_from_file_names() -> None:
    assert model_id_for(Path("Qwen2.5-Coder-1.5B.Q4_K_M.gguf")) == "qwen2.5-coder-1.5b.q4_k_m"
    assert model_id_for(Path("weird name (1).gguf")) == "weird-name-1"


def test_resolve_starter_and_paths(tmp_path: Path) -> None:
    assert resolve_model(None, tmp_path).model_id == STARTER_MODEL_ID
    assert resolve_model("starter", tmp_path).path == starter_model_path()
    local = tmp_path / "My-Model.Q8_0.gguf"
    local.write_bytes(b"GGUF")
    assert resolve_model(str(local), tmp_path).model_id == "my-model.q8_0"
    # Names resolve through the library's records.
    starter = starter_model_path()
    assert starter is not None
    Library(tmp_path / "models").import_file(starter, name="my-model.q8_0", copy=False)
    assert resolve_model("my-model.q8_0", tmp_path / "models").path == starter
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("nope", tmp_path / "models")
    assert "my-model.q8_0" in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_binds_are_allowed(host: str) -> None:
    assert check_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "myhost.lan"])
def test_other_binds_point_to_remote_access(host: str) -> None:
    with pytest.raises(ConfigError, match="remote access"):
        check_loopback_host(host)


def modules_loaded_by(code: str, names: Sequence[str]) -> list[str]:
    """Which of ``names`` a fresh interpreter has imported after running ``code``."""
    check = f"{code}\nimport sys\nprint([m for m in {list(names)!r} if m in sys.modules])\n"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return list(ast.literal_eval(result.stdout.strip()))


def test_gateway_modules_do_not_load_llama_cpp_or_qt() -> None:
    code = "import localserve.daemon.daemon, localserve.cli"
    assert modules_loaded_by(code, ["llama_cpp", "PySide6"]) == []


def test_serving_start_up_leaves_out_what_it_does_not_use() -> None:
    """What `localserve serve` imports before it answers (the CLI, the daemon, the gateway,
    the question of GPU offload) leaves out the modules only other work needs: each one put
    back costs the cold start 10 to 90 ms (docs/benchmarks.md)."""
    unused = (
        "llama_cpp",
        "numpy",
        "huggingface_hub",
        "PIL",
        "cryptography",
        "filelock",
        "keyring",
        "jinja2",  # the starter's whole record: after the first answer (starter-model.json)
        "tomli_w",
        "pydantic.v1",  # FastAPI imports it to vet route annotations (routes/openai.py)
        "fastapi",  # 0.28 s of CPU: only the later routes use it (server/app.py)
    )
    code = (
        "import localserve.cli.main, localserve.daemon.daemon, localserve.daemon.gateway\n"
        "from localserve.config import Settings\n"
        "from localserve.runner.llama_backends import gpu_offload_supported\n"
        "from localserve.server.app import create_app\n"
        "gpu_offload_supported()\n"
        "create_app(Settings(), None, None, None)  # routes are built, not called"
    )
    assert modules_loaded_by(code, unused) == []


def test_a_daemon_reaches_its_first_handshake_without_the_gateway_side() -> None:
    """What the daemon imports and makes before its first runner's handshake (``Daemon.run``:
    the CLI, the pool, the telemetry) leaves the control API's models and the gateway to be
    imported while that runner loads."""
    later = ("localserve.api.control", "localserve.daemon.gateway", "httpx", "starlette")
    code = (
        "import localserve.cli.main, localserve.daemon.daemon\n"
        "from localserve.daemon.telemetry import Telemetry\n"
        "Telemetry(lambda: 0, lambda: {})"
    )
    assert modules_loaded_by(code, later) == []


# What a runner imports before it starts loading a model: llama-cpp-python's C binding, not
# its ``Llama`` (runner/__main__.py imports the binding alone, ``import_binding_alone``).
BINDING_ALONE = (
    "from localserve.runner.llama_backends import import_binding_alone\n"
    "import localserve.runner.__main__\n"
    "import_binding_alone()\n"
)
LATER_THAN_A_LOAD = (
    "pydantic",
    "asyncio",
    "uvicorn",
    "localserve.runner.engine",
    "localserve.api.runner",
    "llama_cpp.llama",
    "llama_cpp.llama_chat_format",
)


def test_a_runner_starts_its_load_ahead_before_pydantic_and_the_engine() -> None:
    """A first runner with a guess starts loading right after the binding's import
    (runner/__main__.py, anticipation.py, model_file.py); the rest comes while it loads."""
    code = BINDING_ALONE + "import localserve.runner.anticipation, localserve.runner.model_file"
    assert modules_loaded_by(code, LATER_THAN_A_LOAD) == []


def test_a_runner_starts_loading_its_handshake_before_validating_it() -> None:
    """What a runner imports before its loading thread reads the handshake and loads
    (``run.py``, ``load_order.py``): pydantic, which validates the handshake, the engine and
    the event loop come after, while the model loads."""
    code = BINDING_ALONE + (
        "import localserve.runner.run, localserve.runner.model_file, localserve.runner.load_order"
    )
    assert modules_loaded_by(code, LATER_THAN_A_LOAD) == []


def test_the_binding_alone_is_the_binding_of_the_whole_package() -> None:
    """``import_binding_alone`` gives ``llama_cpp`` the binding's names, as the package's own
    ``__init__`` does, and its other modules import as usual."""
    code = BINDING_ALONE + (
        "import llama_cpp, llama_cpp.llama_cpp as binding\n"
        "from llama_cpp import _internals, mtmd_cpp\n"
        "from llama_cpp.llama_grammar import LlamaGrammar\n"
        "assert llama_cpp.llama_backend_init is binding.llama_backend_init\n"
        "assert llama_cpp.llama_model_default_params is binding.llama_model_default_params\n"
        "assert not hasattr(llama_cpp, 'Llama')"
    )
    assert modules_loaded_by(code, ["llama_cpp.llama"]) == []
    import llama_cpp  # the whole package, as in this process

    from localserve.runner import llama_backends

    llama_backends.import_binding_alone()  # imported already: nothing changes
    assert sys.modules["llama_cpp"] is llama_cpp and hasattr(llama_cpp, "Llama")


def test_a_runner_start_up_leaves_out_the_gateway_side() -> None:
    """A runner's imports (runner/__main__.py, run.py) are on the way to the first answer too."""
    unused = ("httpx", "fastapi", "huggingface_hub", "PIL", "cryptography", "keyring")
    code = "import localserve.runner.engine, localserve.runner.app, localserve.runner.run"
    assert modules_loaded_by(code, unused) == []


def test_a_first_launch_loads_the_starter_before_reading_its_template(tmp_path: Path) -> None:
    """The record a load needs (quant type, sizes) comes from the starter's header alone when
    none is kept: Jinja, 40 ms, waits until after the handshake (Library.starter_record). The
    whole record still reads the template, and is kept."""
    kept = tmp_path / "starter-model.json"
    load = (
        "from pathlib import Path\n"
        "from localserve.hub.library import Library\n"
        f"library = Library(Path({str(tmp_path)!r}) / 'models', Path({str(kept)!r}))\n"
        "record = library.find('starter', for_load=True)\n"
        "assert record is not None and record.quant_type and record.layers > 0"
    )
    assert modules_loaded_by(load, ["jinja2"]) == []
    assert not kept.exists()
    whole = f"{load}\nassert library.find('starter').capabilities()"
    assert modules_loaded_by(whole, ["jinja2"]) == ["jinja2"]
    assert kept.exists()
