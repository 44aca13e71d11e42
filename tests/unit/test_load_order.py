"""A runner reads what its load needs from the handshake's JSON before validating it
(runner/load_order.py): the same values as the validated handshake, or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localserve.api.engine import EngineSettings
from localserve.api.runner import EnginePath, RunnerConfig
from localserve.hardware.devices import resolve_engine
from localserve.runner.llama_backends import gpu_offload_supported
from localserve.runner.load_order import LoadOrder


def handshake(path: EnginePath) -> RunnerConfig:
    settings = resolve_engine(EngineSettings(ctx=2048, threads=3), gpu_offload_supported())
    return RunnerConfig(
        model_path="/models/m.gguf",
        model_id="m",
        token="secret",
        engine=settings,
        engine_path=path,
        log_file="/logs/runner-m.log",
    )


@pytest.mark.parametrize(
    "path",
    [
        EnginePath("haswell", False, "why", checked=True, check_key="k"),
        EnginePath("best", True, "first start", check_key="k", trial=True),
        EnginePath(None, True, "native build"),
    ],
)
def test_the_order_read_before_validation_is_the_validated_handshakes(path: EnginePath) -> None:
    config = handshake(path)
    order = LoadOrder.from_json(config.to_line())
    assert order == LoadOrder.of(config)
    assert order == LoadOrder(
        model_path=Path("/models/m.gguf"),
        gpu_layers=resolve_engine(EngineSettings(), gpu_offload_supported()).n_gpu_layers,
        threads=3,
        cpu_variant=path.cpu_variant,
        extra_buffers=path.extra_buffers,
        trial=path.trial,
        log_file="/logs/runner-m.log",
    )


def edited(change: str) -> bytes:
    fields = json.loads(handshake(EnginePath("haswell", True, "why")).to_line())
    if change == "gpu_layers as text":
        fields["engine"]["gpu_layers"] = "0"
    elif change == "threads unresolved":
        fields["engine"]["threads"] = 0
    elif change == "no model path":
        del fields["model_path"]
    elif change == "extra buffers as a number":
        fields["engine_path"]["extra_buffers"] = 1
    elif change == "not an object":
        fields = [fields]
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    "line",
    [
        edited("gpu_layers as text"),
        edited("threads unresolved"),
        edited("no model path"),
        edited("extra buffers as a number"),
        edited("not an object"),
        b"{not json\n",
        b"\xff\xfe\n",
    ],
)
def test_anything_else_is_left_to_the_validation(line: bytes) -> None:
    """No order: the runner validates first, and the validation says what is wrong (or, for
    settings left 'auto', resolves them: ``LoadOrder.of``)."""
    assert LoadOrder.from_json(line) is None


def test_settings_left_automatic_are_resolved_for_the_load() -> None:
    config = RunnerConfig(
        model_path="/models/m.gguf",
        model_id="m",
        token="t",
        engine=EngineSettings(),  # threads 0, gpu_layers "auto", as an in-process caller has them
    )
    assert LoadOrder.from_json(config.to_line()) is None
    order = LoadOrder.of(config)
    resolved = resolve_engine(EngineSettings(), gpu_offload_supported())
    assert (order.threads, order.gpu_layers) == (resolved.threads, resolved.n_gpu_layers)
