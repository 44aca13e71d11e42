"""Loading the model a first runner's handshake will most likely name, before it comes.

A runner started with ``GUESS_FIRST`` reads a guess at its handshake first thing
(``api/anticipation.py``). It loads the backends and starts loading that model on a thread
of its own right after importing the binding (``AheadLoad.start``), then imports the rest of
the engine while llama.cpp loads in C, then makes the engine (``AheadLoad.engine``) while the
handshake is read on another thread. The engine is kept when the handshake asks for exactly
the same (``same_load``: all but the token and the log file). Otherwise it is freed (the
context is not made at all when the handshake came first), and the runner loads what it was
asked for, as without a guess. A guess that fails to load costs only its time: it is logged
and dropped. The one thing a wrong guess leaves behind is its CPU variant, which llama.cpp
cannot unload: a handshake naming another makes the runner exit with ``EXIT_RESPAWN``
(``llama_backends.OtherVariantLoaded``).

A first launch's guess names only the starter model (``api/anticipation.py``): the runner
loads its weights as a first start does (``WeightsAhead``: the best CPU variant, extra buffer
types on, no GPU layers) and makes the context once the handshake says how; its load takes
them when the handshake asks for the same file loaded the same way. Such a load is its
engine check's as well when the handshake makes the runner check its path (``trial``): a
crash in it comes before the handshake's ``checking`` line, and the daemon then checks the
way it does after any crash it cannot pin on a path (``daemon/engine_path.py``).

Until the handshake names the model's log file, the log is the spare runner's, and so are
llama.cpp's lines about a load made ahead.
"""

from __future__ import annotations

import importlib.util
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localserve.api.anticipation import parse_anticipation
from localserve.hub.starter import STARTER_PACKAGE
from localserve.runner import llama_backends
from localserve.runner.background import in_background

if TYPE_CHECKING:
    from localserve.api.runner import RunnerConfig
    from localserve.runner.commands import ThreadShare
    from localserve.runner.engine import Engine
    from localserve.runner.load_order import LoadOrder
    from localserve.runner.weights import EngineConfig, Weights

log = logging.getLogger("localserve.runner")

NOT_COMPARED = {"token", "log_file"}  # they do not change what is loaded


def engine_config(config: RunnerConfig) -> EngineConfig:
    """What the engine needs of a handshake."""
    from localserve.runner.weights import EngineConfig

    return EngineConfig(
        Path(config.model_path),
        config.model_id,
        config.engine,
        config.engine_path,
        Path(config.mmproj_path) if config.mmproj_path else None,
        config.chat_template,
    )


def same_load(guess: RunnerConfig, config: RunnerConfig) -> bool:
    return guess.model_dump(exclude=NOT_COMPARED) == config.model_dump(exclude=NOT_COMPARED)


@dataclass
class LoadedAhead:
    """The engine made from the guess, waiting for the handshake to ask for it."""

    guess: RunnerConfig
    share: ThreadShare
    weights: Weights
    engine: Engine

    def serves(self, config: RunnerConfig) -> bool:
        return same_load(self.guess, config)

    def discard(self) -> None:
        log.info("The handshake asked for another load than the guess: freeing it.")
        self.engine.close()
        self.weights.model.close()


def start_ahead(line: bytes) -> AheadLoad | WeightsAhead | None:
    """The load of what an anticipation ``line`` guesses, started; None when it guesses
    nothing this runner can load ahead."""
    parsed = parse_anticipation(line)
    if parsed is None:
        log.warning("Expected a guess at the handshake first; got %.80r", line)
        return None
    guess, build = parsed
    if isinstance(guess, dict):
        return AheadLoad.start(guess, build)
    return WeightsAhead.start_starter()


class AheadLoad:
    """The guess's model, loading on a thread of its own."""

    def __init__(self, fields: dict[str, Any], model: Future[Any], rss_before_load: int) -> None:
        self.fields = fields  # the guessed handshake, as JSON gave it
        self.model = model  # the binding's LlamaModel, once loaded
        self.rss_before_load = rss_before_load

    @classmethod
    def start(cls, fields: dict[str, Any], build: str) -> AheadLoad | None:
        """The load of the model a guessed handshake's ``fields`` name, started; None when
        the guess was made for another llama.cpp build, or its load cannot start. Imports
        only the binding (``model_file.py``): pydantic and the rest come while it loads."""
        try:
            path = fields["engine_path"]
            if path.get("trial"):
                return None  # the handshake's own runner checks that path as it loads
            variant, extra_buffers = path["cpu_variant"], bool(path["extra_buffers"])
            model_path = Path(fields["model_path"])
            gpu_layers = int(fields["engine"]["gpu_layers"])  # resolved by the daemon
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("Ignored a malformed guess at the handshake (%r)", exc)
            return None
        if build != llama_backends.build_id():
            log.info("Not loading ahead: the guess was made for another llama.cpp build.")
            return None
        from localserve.runner.model_file import open_model, resident_bytes

        rss_before_load = resident_bytes()
        try:
            llama_backends.load_backends(variant)
        except llama_backends.BackendLoadError as exc:
            log.info("Not loading ahead: %s", exc)
            return None

        log.info("Loading %s ahead of the handshake (the last launch's first model).", model_path)
        model = in_background(lambda: open_model(model_path, gpu_layers, extra_buffers), "ahead")
        return cls(fields, model, rss_before_load)

    def engine(self, handshake: Future[RunnerConfig | None]) -> LoadedAhead | None:
        """The guess's engine, made once its model is in; None when the load failed, or when
        ``handshake`` came meanwhile and asks for something else."""
        from localserve.api.runner import RunnerConfig
        from localserve.runner.commands import ThreadShare
        from localserve.runner.engine import Engine
        from localserve.runner.weights import weights_of

        try:
            model = self.model.result()
        except Exception as exc:  # only a guess: the handshake's own load says what is wrong
            log.info("Could not load ahead: %s", exc)
            return None
        try:
            guess = RunnerConfig.model_validate({**self.fields, "token": ""})
        except ValueError as exc:
            log.warning("Ignored a malformed guess at the handshake: %s", exc)
            model.close()
            return None
        if handshake.done():
            config = None if handshake.exception() else handshake.result()
            if config is None or not same_load(guess, config):
                log.info("The handshake asked for another load than the guess: freed.")
                model.close()  # not worth a context
                return None
        weights = weights_of(model, guess.engine, self.rss_before_load)
        share = ThreadShare(guess.engine.threads)
        try:
            engine = Engine(engine_config(guess), share, weights)
        except Exception as exc:  # as above
            log.info("Could not make the engine ahead: %s", exc)
            model.close()
            return None
        return LoadedAhead(guess, share, weights, engine)


@dataclass
class WeightsAhead:
    """A first launch's starter model, loading as a first start loads it; the context is the
    handshake's to make."""

    model_path: Path
    cpu_variant: str | None  # resolved: the best of a portable build's, None for a native one
    ranked: list[str] | None  # a portable build's variants, best first, as a trial reports them
    model: Future[Any]  # the binding's LlamaModel, once loaded
    rss_before_load: int
    gpu_layers: int = 0
    extra_buffers: bool = True

    @classmethod
    def start_starter(cls) -> WeightsAhead | None:
        """The starter's load, started; None without the starter, or where the daemon would
        decide GPU layers (a build that can offload) or loading fails to start."""
        model_path = starter_file()
        if model_path is None or llama_backends.gpu_offload_supported():
            return None
        ranked = None
        try:
            variant = None
            if llama_backends.is_portable_build():
                variant, ranked = llama_backends.best_variant_here()
            llama_backends.load_backends(variant)
        except llama_backends.BackendLoadError as exc:
            log.info("Not loading ahead: %s", exc)
            return None
        from localserve.runner.model_file import open_model, resident_bytes

        rss_before_load = resident_bytes()
        log.info("Loading the starter model ahead of the handshake (a first launch).")
        model = in_background(lambda: open_model(model_path, 0, True), "ahead")
        return cls(model_path, variant, ranked, model, rss_before_load)

    def serves(self, order: LoadOrder) -> bool:
        """Whether ``order`` asks for this file, loaded this way (a trial's "best" variant
        is this one: ranked the same)."""
        return (
            order.model_path == self.model_path
            and order.gpu_layers == self.gpu_layers
            and order.extra_buffers == self.extra_buffers
            and (
                order.cpu_variant == self.cpu_variant
                or (order.trial and order.cpu_variant == "best")
            )
        )

    def take(self) -> tuple[Any, int] | None:
        """The loaded model and the RSS before its load, or None when its load failed (the
        handshake's own load then says why)."""
        try:
            return self.model.result(), self.rss_before_load
        except Exception as exc:
            log.info("Could not load ahead: %s", exc)
            return None

    def discard(self) -> None:
        log.info("The handshake asked for another load than the starter's: freeing it.")
        self.model.add_done_callback(_close_loaded)


def _close_loaded(load: Future[Any]) -> None:
    if load.exception() is None:
        load.result().close()


def starter_file() -> Path | None:
    """The starter's GGUF file in its package's folder, found without importing the package
    or its metadata (``hub/starter.py`` asks the metadata, 30 ms): a guess, which the
    handshake's model path confirms or not."""
    spec = importlib.util.find_spec(STARTER_PACKAGE)
    folders = spec.submodule_search_locations if spec is not None else None
    files = sorted(Path(next(iter(folders))).glob("*.gguf")) if folders else []
    return files[0] if len(files) == 1 else None
