"""What a runner's load needs of its handshake, read from the handshake's JSON as it came.

A first runner's handshake comes while the runner is still importing: validating it
(``RunnerConfig``) takes pydantic and the engine's settings, about 0.1 s of imports, and
llama.cpp's load does not need them. So the loading thread reads the few fields a load needs
from the JSON itself, starts loading, and validates the whole handshake once the weights are
in (the main thread imports pydantic meanwhile). The fields are read strictly (an int is an
int, not a string of digits), so a handshake that passes here gives the same values when
validated; one that does not (never the daemon's) is validated first, which says what is
wrong.

Standard modules only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localserve.api.runner import RunnerConfig


@dataclass(frozen=True)
class LoadOrder:
    model_path: Path
    gpu_layers: int  # resolved: llama.cpp's n_gpu_layers
    threads: int  # resolved: at least 1
    cpu_variant: str | None  # "best" on a trial path: the runner ranks the variants
    extra_buffers: bool
    trial: bool  # no verdict yet: the runner checks this path (``EnginePath.trial``)
    log_file: str | None

    @classmethod
    def from_json(cls, line: bytes) -> LoadOrder | None:
        """The order in a handshake line, or None when the line does not hold it as the
        daemon writes it (then ``RunnerConfig.from_line`` says what is wrong)."""
        try:
            fields = json.loads(line)
            engine, path = fields["engine"], fields["engine_path"]
            order = cls(
                model_path=Path(_typed(fields["model_path"], str)),
                gpu_layers=_typed(engine["gpu_layers"], int),
                threads=_typed(engine["threads"], int),
                cpu_variant=_typed(path["cpu_variant"], str, optional=True),
                extra_buffers=_typed(path["extra_buffers"], bool),
                trial=_typed(path.get("trial", False), bool),
                log_file=_typed(fields.get("log_file"), str, optional=True),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return order if order.threads > 0 else None

    @classmethod
    def of(cls, config: RunnerConfig) -> LoadOrder:
        """The order of a validated handshake, its automatic settings resolved here."""
        from localserve.hardware.devices import resolve_engine
        from localserve.runner.llama_backends import gpu_offload_supported

        settings = resolve_engine(config.engine, gpu_offload_supported())
        return cls(
            model_path=Path(config.model_path),
            gpu_layers=settings.n_gpu_layers,
            threads=settings.threads,
            cpu_variant=config.engine_path.cpu_variant,
            extra_buffers=config.engine_path.extra_buffers,
            trial=config.engine_path.trial,
            log_file=config.log_file,
        )


def _typed(value: Any, kind: type, optional: bool = False) -> Any:
    """``value`` when it is exactly of ``kind`` (or None, if ``optional``); else TypeError."""
    if (value is None and optional) or type(value) is kind:
        return value
    raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
