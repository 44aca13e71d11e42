"""What the supervisor and a runner child process say to each other.

The supervisor writes one JSON line (the ``RunnerConfig``, including the per-process token) to
the runner's stdin and keeps stdin open: EOF means the daemon is gone and the runner exits, so a
runner is never orphaned, whatever killed its parent. Later lines on stdin are the daemon's
commands (``runner/commands.py``). The runner answers with one JSON line on
stdout: ``ready`` (with its port and model facts) or ``load_failed`` (with a readable reason),
after a ``checking`` line when its engine path is a trial (``EnginePath.trial``); those lines
and the runner's exit codes are in ``api/runner_events.py``.
After ``ready``, stdout carries telemetry events (``runner/reporting.py``), read by the
supervisor until the runner exits.
The token never appears in argv or the environment, where other local users could read it.
A first runner may find a guess at its handshake on stdin before the handshake itself
(``api/anticipation.py``); only the handshake says what it serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from localserve.api.engine import EngineSettings


class RunnerInfo(BaseModel):
    """What a runner says about its model in its ``ready`` line; the control API's status shows
    it as each loaded model's ``info``."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    n_ctx: int
    n_ctx_train: int
    n_params: int
    size_bytes: int
    description: str
    supports_fim: bool
    has_chat_template: bool
    tool_syntax: str | None  # how the model writes tool calls; None: its template takes no tools
    thinking_syntax: str | None = None  # how the model marks its thoughts; None: it does not think
    vision: bool = False  # a projector is loaded: the model sees images
    gpu_layers: int
    gpu_offload_supported: bool
    threads: int
    parallel: int
    kv_cells: int = 0  # the KV cache's size in tokens (shared, or all slots' together)
    kv_bytes_per_cell: int = 0  # one token's K and V, all layers
    rss_before_load_bytes: int  # the runner's RSS before the model: the base of memory figures
    backend: str  # the devices llama.cpp runs this model on, e.g. "CUDA0 (NVIDIA H100) + CPU"
    cpu_variant: str | None  # a portable build's CPU kernels (haswell, zen4...); None: native
    extra_buffers: bool  # AMX / repacked-weight layouts on the CPU
    engine_note: str  # why this path (the engine check's verdict), in a sentence


# How a runner lays out its contexts; the fit estimate (hub/fit.py) plans with the same numbers.
EMBEDDING_CTX = 512  # cells of the binding's own context, which only embeds
BATCH_TOKENS = 512  # n_batch of the batching context and of the embedding context


@dataclass(frozen=True)
class EnginePath:
    """How a runner uses llama.cpp on this machine (``daemon/engine_path.py`` decides)."""

    cpu_variant: str | None  # a portable build's CPU variant (haswell, zen4...); None: native
    extra_buffers: bool  # llama.cpp's extra weight layouts (AMX, repacked Q4_0...) on the CPU
    note: str  # why, in a sentence: the runner log, status, the control API and the tray say it
    checked: bool = False  # True once the engine check decoded with exactly this path
    check_key: str = ""  # the verdict this came from (a crash in a runner is charged to it)
    # No verdict yet: the runner runs the check's decodes itself once loaded, before it says
    # ``ready`` (``cpu_variant`` may then be "best", which the runner resolves and says).
    trial: bool = False


LLAMA_DEFAULTS = EnginePath(None, True, "llama.cpp's defaults (no engine check)")


class RunnerConfig(BaseModel):
    """The first line on a runner's stdin: which model, the engine settings as the daemon
    resolved them (passed on unchanged to the engine and its scheduler), the engine path the
    check chose, and the token."""

    model_config = ConfigDict(frozen=True)

    model_path: str
    model_id: str
    token: str
    engine: EngineSettings
    engine_path: EnginePath = LLAMA_DEFAULTS
    log_level: str = "info"
    log_file: str | None = None  # where stderr goes from now on; None: where it went already
    mmproj_path: str | None = None  # the model's vision projector, if it has one
    chat_template: str | None = None  # a template in place of the one in the model's file

    def to_line(self) -> bytes:
        return (self.model_dump_json() + "\n").encode("utf-8")

    @classmethod
    def from_line(cls, line: bytes) -> RunnerConfig:
        return cls.model_validate_json(line)


@dataclass(frozen=True)
class RunnerEndpoint:
    """How to reach a ready runner: its loopback URL and the token it demands."""

    base_url: str
    token: str
    info: dict[str, Any]
    pid: int
