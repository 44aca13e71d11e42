"""Per-model presets: parsing `models set` words, the precedence request > preset > global,
Ollama's parameters text, and config.toml written without losing other settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from localserve.api.engine import EngineSettings
from localserve.api.presets import (
    ModelPreset,
    engine_for,
    fit_inputs,
    ollama_parameters,
    parse_assignments,
    with_request_defaults,
)
from localserve.config.preset_store import PresetStore
from localserve.config.settings import load_settings, read_config_file
from localserve.errors import ConfigError


def test_assignments_are_read_as_toml_values() -> None:
    assert parse_assignments(
        ["ctx=8192", "temperature=0.6", "gpu-layers=auto", "system='Be brief.'", "stop=a, b"]
    ) == {"ctx": 8192, "temperature": 0.6, "gpu_layers": "auto", "system": "Be brief.",
          "stop": ["a", "b"]}  # fmt: skip
    assert parse_assignments(["top_k="]) == {"top_k": None}  # removes the key
    with pytest.raises(ConfigError, match="not key=value"):
        parse_assignments(["temperature"])
    with pytest.raises(ConfigError, match="'colour' is not a model setting"):
        parse_assignments(["colour=red"])


def test_a_requests_own_fields_win_over_the_preset() -> None:
    preset = ModelPreset(temperature=0.2, top_k=10, stop=["END"], system="Be brief.")
    chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1.0}
    filled = with_request_defaults(chat, preset)
    assert filled["temperature"] == 1.0  # the request's
    assert filled["top_k"] == 10 and filled["stop"] == ["END"]  # the preset's
    assert filled["messages"][0] == {"role": "system", "content": "Be brief."}
    own_system = {"model": "m", "messages": [{"role": "system", "content": "Mine."}]}
    assert with_request_defaults(own_system, preset)["messages"] == own_system["messages"]
    assert with_request_defaults(chat, None) is chat
    assert "messages" not in with_request_defaults({"model": "m", "prompt": "x"}, preset)


def test_the_preset_overrides_the_global_engine_settings() -> None:
    base = EngineSettings(ctx=4096, threads=2)
    tuned = engine_for(base, ModelPreset(ctx=16384, cache_type_k="q8_0", temperature=0.3))
    assert (tuned.ctx, tuned.cache_type_k, tuned.threads) == (16384, "q8_0", 2)
    assert engine_for(base, ModelPreset(temperature=0.3)) is base  # no engine key: unchanged
    assert engine_for(base, None) is base


def test_the_fit_estimate_takes_the_presets_context_and_cache_types() -> None:
    assert fit_inputs(None) == (None, 1.0)
    assert fit_inputs(ModelPreset(ctx=16384, cache_type_k="q8_0", cache_type_v="q8_0")) == (
        16384,
        EngineSettings(cache_type_k="q8_0", cache_type_v="q8_0").kv_scale,
    )
    assert fit_inputs(ModelPreset(cache_type_v="q4_0"))[1] < 1.0


def test_ollama_show_writes_parameters_its_way() -> None:
    text = ollama_parameters(ModelPreset(ctx=2048, temperature=0.7, stop=["<|im_end|>"]))
    assert text.splitlines() == [
        "num_ctx                        2048",
        "temperature                    0.7",
        'stop                           "<|im_end|>"',
    ]
    assert ollama_parameters(None) == ""


def test_the_store_writes_its_table_and_keeps_the_other_settings(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('port = 12000\n\n[models."other"]\nctx = 1024\n')
    changes: list[tuple[str, set[str]]] = []
    store = PresetStore(
        config, load_settings(config).models, on_change=lambda m, k: changes.append((m, k))
    )
    preset, changed = store.update("Qwen3", {"ctx": 8192, "temperature": 0.6})
    assert changed == {"ctx", "temperature"} and changes == [("qwen3", changed)]
    written = read_config_file(config)
    assert written["port"] == 12000
    assert written["models"] == {"other": {"ctx": 1024}, "qwen3": {"ctx": 8192, "temperature": 0.6}}
    assert load_settings(config).models["qwen3"] == preset  # what the daemon reads at start

    _, changed = store.update("qwen3", {"ctx": None, "temperature": 0.6})
    assert changed == {"ctx"} and read_config_file(config)["models"]["qwen3"] == {
        "temperature": 0.6
    }
    before = config.read_text()
    with pytest.raises(ConfigError, match="temperature"):
        store.update("qwen3", {"temperature": 9})
    assert config.read_text() == before and store.get("qwen3") == ModelPreset(temperature=0.6)
    store.update("qwen3", {"temperature": None})
    assert "qwen3" not in read_config_file(config)["models"]
