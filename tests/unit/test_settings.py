from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from localserve.config import load_settings
from localserve.config.settings import (
    DEFAULT_PORT,
    Settings,
    _is_json_field,
    read_config_file,
    update_config_file,
)
from localserve.errors import ConfigError
from localserve.paths import app_paths


def test_localserve_home_moves_every_folder(tmp_path: Path) -> None:
    paths = app_paths({"LOCALSERVE_HOME": str(tmp_path)})
    for folder in (paths.config_dir, paths.data_dir, paths.log_dir, paths.runtime_dir):
        assert folder.is_relative_to(tmp_path)
    assert paths.config_file == tmp_path / "config" / "config.toml"


def test_platform_dirs_without_home() -> None:
    paths = app_paths({})
    assert "localserve" in str(paths.config_dir)
    assert "localserve" in str(paths.data_dir)


def test_defaults_are_safe(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "missing.toml")
    assert settings.host == "127.0.0.1"
    assert settings.cors_origins == []
    assert settings.gpu_layers == "auto"


def test_precedence_overrides_then_env_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('port = 9000\nctx = 1024\nthreads = 3\ngpu_layers = "12"\n')
    assert load_settings(config).port == 9000
    assert load_settings(config).gpu_layers == 12
    monkeypatch.setenv("LOCALSERVE_PORT", "9100")
    monkeypatch.setenv("LOCALSERVE_CTX", "2048")
    settings = load_settings(config, overrides={"ctx": 512, "threads": None})
    assert settings.port == 9100  # env beats file
    assert settings.ctx == 512  # CLI beats env
    assert settings.threads == 3  # an option not given leaves the file's value


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("port = 99999\n", "port"),
        ('cors_origins = ["*"]\n', "cors_origins"),
        ("port = [\n", "config.toml, line 1"),
        ("no_such_setting = 1\n", "no_such_setting"),
        ('gpu_layers = "lots"\n', "gpu_layers"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_value_names_its_line_or_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("ctx = 1024\n\n# the port\nport = 99999\n")
    with pytest.raises(ConfigError, match=r"port \(.*config\.toml, line 4\)"):
        load_settings(config)
    config.write_text("")
    monkeypatch.setenv("LOCALSERVE_CTX", "-5")
    with pytest.raises(ConfigError, match=r"ctx \(LOCALSERVE_CTX\)"):
        load_settings(config)


def test_environment_variables_in_any_case_with_lists_and_tables_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("localserve_port", "9200")  # the name in any case, as before
    monkeypatch.setenv("LOCALSERVE_LOCAL_ONLY", "yes")
    monkeypatch.setenv("LOCALSERVE_GPU_LAYERS", "auto")
    monkeypatch.setenv("LOCALSERVE_CORS_ORIGINS", '["http://localhost:3000"]')
    monkeypatch.setenv("LOCALSERVE_MODELS", '{"starter": {"temperature": 0.2}}')
    monkeypatch.setenv("LOCALSERVE_HOME", str(tmp_path))  # a path, not a setting
    settings = load_settings(tmp_path / "config.toml")
    assert settings.port == 9200
    assert settings.local_only is True
    assert settings.gpu_layers == "auto"
    assert settings.cors_origins == ["http://localhost:3000"]
    assert settings.models["starter"].temperature == 0.2


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LOCALSERVE_CORS_ORIGINS", "[http://a", "LOCALSERVE_CORS_ORIGINS must be a JSON list"),
        ("LOCALSERVE_MODELS", "{starter", "LOCALSERVE_MODELS must be a JSON object"),
        ("LOCALSERVE_PORT", "", "port (LOCALSERVE_PORT)"),
    ],
)
def test_a_bad_environment_variable_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    """Malformed JSON in a variable was a traceback from pydantic-settings; now one line."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "config.toml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("annotation", "json"),
    [
        (list[str], True),
        (dict[str, int], True),
        (list[str] | None, True),
        (Optional[dict[str, int]], True),  # noqa: UP045 - the old spelling is a union too
        (int, False),
        (str | None, False),
        (Literal["auto"] | int, False),
    ],
)
def test_lists_and_tables_are_json_in_variables_even_when_optional(
    annotation: Any, json: bool
) -> None:
    assert _is_json_field(annotation) is json


def test_a_settings_object_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ``load_settings`` reads the environment: the tray's check of the values typed in
    its settings window judges those values alone."""
    monkeypatch.setenv("LOCALSERVE_PORT", "9300")
    assert Settings().port == DEFAULT_PORT


def test_changes_keep_the_last_good_copy_and_a_broken_file_is_never_overwritten(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    update_config_file(config, port=9000)
    assert not (tmp_path / "config.toml.bak").exists()  # nothing to back up the first time
    update_config_file(config, ctx=2048)
    assert read_config_file(tmp_path / "config.toml.bak") == {"port": 9000}
    assert read_config_file(config) == {"port": 9000, "ctx": 2048}

    config.write_text('port = 9000\nctx = "2048\n')  # a hand edit gone wrong
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert f"{config}, line 2, column" in message
    assert f"last good settings are in {tmp_path / 'config.toml.bak'}" in message
    with pytest.raises(ConfigError):
        update_config_file(config, local_only=True)  # refuses rather than losing the file
    assert config.read_text() == 'port = 9000\nctx = "2048\n'
