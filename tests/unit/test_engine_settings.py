"""One engine-settings object from the settings to the runner: what the daemon sends is what the
runner's engine and scheduler get, and the settings' sections keep the names users write."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from localserve.api.engine import EngineSettings
from localserve.api.runner import EnginePath, RunnerConfig
from localserve.config import load_settings
from localserve.config.settings import SECTIONS, Settings
from localserve.hardware.devices import ALL_LAYERS, physical_cores, resolve_engine


def test_engine_settings_cross_the_runner_handshake_unchanged(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'ctx = 2048\ngpu_layers = "7"\nthreads = 3\nparallel = 2\nprefix_reuse = false\n'
        'weight_repack = "off"\ncpu_variant = "haswell"\n'
    )
    engine = resolve_engine(load_settings(config).engine, gpu_offload_supported=True)
    sent = RunnerConfig(
        model_path="/models/m.gguf",
        model_id="m",
        token="secret",
        engine=engine,
        engine_path=EnginePath("haswell", False, "why", checked=True, check_key="k"),
    )
    line = sent.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line on the runner's stdin
    received = RunnerConfig.from_line(line)
    assert received == sent
    assert (
        received.engine
        == engine
        == EngineSettings(
            ctx=2048,
            gpu_layers=7,
            threads=3,
            parallel=2,
            prefix_reuse=False,
            weight_repack="off",
            cpu_variant="haswell",
        )
    )


def test_automatic_choices_are_resolved_once_and_for_good() -> None:
    resolved = resolve_engine(EngineSettings(), gpu_offload_supported=True)
    assert (resolved.threads, resolved.n_gpu_layers) == (physical_cores(), ALL_LAYERS)
    assert resolve_engine(resolved, gpu_offload_supported=True) == resolved
    assert resolve_engine(EngineSettings(), gpu_offload_supported=False).n_gpu_layers == 0
    with pytest.raises(ValueError, match="auto"):
        _ = EngineSettings().n_gpu_layers


def test_sections_hold_the_flat_names_users_already_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("max_queue = 5\nremote_port = 12000\n")
    monkeypatch.setenv("LOCALSERVE_CTX", "1024")
    settings = load_settings(config)
    assert settings.engine.ctx == 1024
    assert settings.limits.max_queue == 5
    assert settings.remote.remote_port == 12000
    sectioned = [name for section in SECTIONS.values() for name in section.model_fields]
    assert len(sectioned) == len(set(sectioned))  # no setting in two sections
    assert set(sectioned) <= set(Settings.model_fields)
    with pytest.raises(Exception, match="frozen"):
        settings.engine.ctx = 1  # type: ignore[misc]


def test_a_quantized_v_cache_without_flash_attention_is_refused() -> None:
    with pytest.raises(ValidationError, match="cache_type_v = 'q4_0' needs flash attention"):
        EngineSettings(cache_type_v="q4_0", flash_attention="off")


def test_quantized_caches_shrink_the_kv_estimate() -> None:
    assert EngineSettings().kv_scale == 1.0
    assert EngineSettings(cache_type_k="q8_0", cache_type_v="q8_0").kv_scale == 34 / 64
    assert EngineSettings(cache_type_k="q8_0", cache_type_v="q4_0").kv_scale == (34 + 18) / 128


def test_flash_attention_is_llama_cpps_choice_except_for_exact_answers() -> None:
    from localserve.runner.scheduler import flash_attention

    assert flash_attention(EngineSettings()) == "auto"  # as llama-server
    assert flash_attention(EngineSettings(batch_exact=True)) == "off"
    assert flash_attention(EngineSettings(batch_exact=True, flash_attention="on")) == "on"
    quantized = EngineSettings(batch_exact=True, cache_type_v="q8_0")
    assert flash_attention(quantized) == "auto"  # a quantized V cache needs it
