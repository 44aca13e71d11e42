"""The engine knobs users expect from llama-server, LM Studio and Ollama: flash attention and
quantized KV caches, on a real runner, with the memory figures following the cache type."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess

F16_CELL = 2 * 30 * 3 * 64 * 2  # the starter: 30 layers, 3 KV heads of 64, K and V in f16


@pytest.mark.parametrize(
    ("env", "cell_bytes"),
    [
        ({"LOCALSERVE_FLASH_ATTENTION": "on"}, F16_CELL),
        (
            {"LOCALSERVE_CACHE_TYPE_K": "q8_0", "LOCALSERVE_CACHE_TYPE_V": "q8_0"},
            F16_CELL * 34 // 64,
        ),
        (
            {"LOCALSERVE_CACHE_TYPE_K": "q4_0", "LOCALSERVE_CACHE_TYPE_V": "q4_0"},
            F16_CELL * 18 // 64,
        ),
    ],
    ids=["flash attention", "q8_0 cache", "q4_0 cache"],
)
def test_a_runner_serves_with_each_knob(
    tmp_path: Path, env: dict[str, str], cell_bytes: int
) -> None:
    with DaemonProcess(tmp_path / "home", "--ctx", "1024", env=env) as daemon:
        daemon.wait_until_model("ready")
        info = daemon.model_status().info
        assert info is not None and info.kv_bytes_per_cell == cell_bytes
        answer = daemon.chat(STARTER_MODEL, max_tokens=12, temperature=0)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] >= 1


def test_a_quantized_v_cache_with_flash_attention_off_is_a_clear_error(tmp_path: Path) -> None:
    env = {"LOCALSERVE_CACHE_TYPE_V": "q8_0", "LOCALSERVE_FLASH_ATTENTION": "off"}
    daemon = DaemonProcess(tmp_path / "home", env=env)
    with pytest.raises(RuntimeError, match="cache_type_v = 'q8_0' needs flash attention"):
        daemon.start(timeout=30)
    assert "Traceback" not in daemon.output()
