"""A runner's life after its first imports: the handshake, the load, then serving.

``__main__.py`` orders the start-up and calls ``run``; see ``api/runner.py`` for how a runner
talks to the supervisor.

One thread waits for the handshake and loads the weights (llama.cpp's load, like the KV
cache's allocation after it, runs in C without the GIL), while the main thread imports the
rest of the engine and then the HTTP side (Starlette, the request models, uvicorn: about 45
ms), which the load does not need. The load starts from the handshake's JSON as it came
(``load_order.py``): pydantic, which validates it, is imported meanwhile, and the daemon's
first handshake comes while a first runner still imports. The HTTP side waits for the weights
(at most ``HTTP_IMPORTS_WAIT_S``): at a cold start the daemon is still importing while they
load, and a third busy thread on a 2-vCPU machine made their load take 110 ms instead of 66;
once they are in, llama.cpp makes the batching context (zeroing its KV cache, about 75 ms, one
thread) and a vCPU is free. A spare runner (daemon/spare.py) has done all this by the time its
handshake comes, but for the load; a first runner may have done the load too
(``anticipation.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from localserve.api.runner_events import (
    EVENT_CHECKING,
    EVENT_LOAD_FAILED,
    EVENT_READY,
    EXIT_LOAD_FAILED,
    EXIT_RESPAWN,
    event_line,
)
from localserve.errors import LocalserveError
from localserve.program import resume_garbage_collection
from localserve.runner.background import in_background
from localserve.runner.commands import ThreadShare, follow_daemon
from localserve.runner.load_order import LoadOrder

if TYPE_CHECKING:
    from localserve.api.runner import RunnerConfig
    from localserve.runner.anticipation import AheadLoad, LoadedAhead, WeightsAhead
    from localserve.runner.engine import Engine

log = logging.getLogger("localserve.runner")
HTTP_IMPORTS_WAIT_S = 0.3  # the longest the HTTP side's imports wait for the weights


class LoadFailed(Exception):
    """The model could not be loaded; the message says why, for the daemon."""


class Respawn(Exception):
    """This process cannot load the model (``EXIT_RESPAWN``); the message says why."""


@dataclass
class Loaded:
    config: RunnerConfig
    share: ThreadShare
    engine: Engine


def announce(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def follow_log_file(path: str) -> None:
    """Point stderr (our log, and llama.cpp's) at the model's log file: a spare runner was
    started before its model, and so before its log, was known."""
    with open(path, "ab") as log_file:
        os.dup2(log_file.fileno(), sys.stderr.fileno())


def receive_handshake(
    stdin: BinaryIO, ahead: AheadLoad
) -> tuple[RunnerConfig | None, LoadedAhead | None]:
    """The handshake (None when the daemon went away first), and the engine made ahead of it
    from a guess (``anticipation.py``), if any."""
    handshake = in_background(lambda: read_config(stdin), "handshake")
    loaded = ahead.engine(handshake)
    return handshake.result(), loaded


def read_config(stdin: BinaryIO) -> RunnerConfig | None:
    line = stdin.readline()
    return parse_config(line) if line else None


def parse_config(line: bytes) -> RunnerConfig:
    from localserve.api.runner import RunnerConfig

    return RunnerConfig.from_line(line)


def receive_and_load(
    weights_loaded: threading.Event, ahead: AheadLoad | WeightsAhead | None
) -> Loaded | None:
    """Wait for the handshake, then load its model (``weights_loaded`` set once its weights
    are in), or take the one loaded ahead when it is the same; None when the daemon went
    away first."""
    from localserve.runner.anticipation import AheadLoad

    if isinstance(ahead, AheadLoad):
        return receive_after_guess(weights_loaded, ahead)
    line = sys.stdin.buffer.readline()
    if not line:
        return None
    order = LoadOrder.from_json(line)
    if order is not None:  # load first, validate meanwhile (``load_order.py``)
        return load(order, lambda: parse_config(line), weights_loaded, ahead)
    config = parse_config(line)  # says what is wrong, or has settings to resolve
    return load(LoadOrder.of(config), lambda: config, weights_loaded, ahead)


def receive_after_guess(weights_loaded: threading.Event, ahead: AheadLoad) -> Loaded | None:
    """``receive_and_load`` for a runner that loaded a guess ``ahead``."""
    config, loaded_ahead = receive_handshake(sys.stdin.buffer, ahead)
    if config is None:
        return None
    if loaded_ahead is not None and loaded_ahead.serves(config):
        if config.log_file:
            follow_log_file(config.log_file)
        log.info("llama.cpp: %s", config.engine_path.note)
        follow_daemon_commands(loaded_ahead.share)
        log.info("loaded %s ahead of the handshake (see spare-runner.log)", config.model_id)
        log.info("loaded %s: %s", config.model_id, loaded_ahead.engine.info)
        return Loaded(config, loaded_ahead.share, loaded_ahead.engine)
    if loaded_ahead is not None:
        loaded_ahead.discard()
    return load(LoadOrder.of(config), lambda: config, weights_loaded)


def load(
    order: LoadOrder,
    validated: Callable[[], RunnerConfig],
    weights_loaded: threading.Event,
    ahead: WeightsAhead | None = None,
) -> Loaded:
    """Load what ``order`` says, or take the weights loading ``ahead`` when they are that,
    and make the engine; ``validated`` gives the whole handshake, asked for once the weights
    are in."""
    from localserve.runner import llama_backends
    from localserve.runner.model_file import open_model, resident_bytes

    if order.log_file:
        follow_log_file(order.log_file)
    share = ThreadShare(order.threads)
    follow_daemon_commands(share)
    if ahead is not None and not ahead.serves(order):
        ahead.discard()
        ahead = None
    variant, ranked = (ahead.cpu_variant, ahead.ranked) if ahead else (order.cpu_variant, None)
    try:
        if order.trial:  # no verdict yet: this runner is the engine check (api/runner.py)
            if variant == "best":
                variant, ranked = llama_backends.best_variant_here()
            announce(event_line(EVENT_CHECKING, cpu_variant=variant, ranked=ranked))
        llama_backends.load_backends(variant)
        taken = ahead.take() if ahead else None  # None: it failed, and this load says why
        if taken is not None:
            model, rss_before_load = taken
            log.info("took the weights loaded ahead of the handshake (see spare-runner.log)")
        else:
            rss_before_load = resident_bytes()
            model = open_model(order.model_path, order.gpu_layers, order.extra_buffers)
        weights_loaded.set()
        return make_engine(validated(), variant, share, model, rss_before_load)
    except llama_backends.OtherVariantLoaded as exc:
        raise Respawn(str(exc)) from exc
    except (llama_backends.BackendLoadError, LocalserveError) as exc:
        raise LoadFailed(str(exc)) from exc
    except RuntimeError as exc:  # the check's decodes failed, short of a crash
        raise LoadFailed(f"llama.cpp failed its engine check: {exc}") from exc


def make_engine(
    config: RunnerConfig, variant: str | None, share: ThreadShare, model: Any, rss_before_load: int
) -> Loaded:
    """The engine around ``model``, loaded for ``config`` with the CPU ``variant``; a trial
    path's check decodes run here."""
    from localserve.hardware.devices import resolve_engine
    from localserve.runner import llama_backends
    from localserve.runner.anticipation import engine_config
    from localserve.runner.engine import Engine
    from localserve.runner.weights import weights_of

    path = dataclasses.replace(config.engine_path, cpu_variant=variant)
    log.info("llama.cpp: %s", path.note)
    # The daemon resolved the settings (then this changes nothing).
    settings = resolve_engine(config.engine, llama_backends.gpu_offload_supported())
    to_load = dataclasses.replace(engine_config(config), engine_path=path)
    engine = Engine(to_load, share, weights_of(model, settings, rss_before_load))
    if path.trial:
        engine.check_decodes(path)
        log.info(
            "engine check passed in this runner: %s CPU kernels, extra buffer types %s",
            path.cpu_variant or "built-in",
            "on" if path.extra_buffers else "off",
        )
    log.info("loaded %s: %s", config.model_id, engine.info)
    return Loaded(config, share, engine)


def follow_daemon_commands(share: ThreadShare) -> None:
    threading.Thread(
        target=follow_daemon, args=(sys.stdin.buffer, share), name="daemon-commands", daemon=True
    ).start()


def run(ahead: AheadLoad | WeightsAhead | None) -> int:
    """Load (or take the load made ``ahead``) and serve; the process's exit code."""
    # The loading thread needs only the binding (``model_file.py``) before it loads the
    # weights (in C, without the GIL), and this thread imports the rest of the engine
    # meanwhile, then the HTTP side once the weights are in (module docstring).
    weights_loaded = threading.Event()
    if ahead is not None:
        ahead.model.add_done_callback(lambda _: weights_loaded.set())
    import localserve.runner.model_file

    loading = in_background(lambda: receive_and_load(weights_loaded, ahead), "load")
    loading.add_done_callback(lambda _: weights_loaded.set())  # a failed load too
    import localserve.runner.engine  # noqa: F401

    weights_loaded.wait(HTTP_IMPORTS_WAIT_S)
    import asyncio  # for serving only: not before the loading thread waits for the handshake

    import uvicorn

    from localserve.asgi.serving import bind_socket, run_async
    from localserve.runner.app import create_runner_app
    from localserve.runner.reporting import EventChannel

    try:
        loaded = loading.result()
    except LoadFailed as exc:
        log.error("load failed: %s", exc)
        announce(event_line(EVENT_LOAD_FAILED, message=str(exc)))
        return EXIT_LOAD_FAILED
    except Respawn as exc:
        log.info("%s A new runner process takes this model.", exc)
        return EXIT_RESPAWN
    if loaded is None:
        return 0  # the daemon went away before giving us a model
    engine = loaded.engine

    # From here on stdout is the event channel to the daemon (reporting.py).
    channel = EventChannel.take_stdout()
    engine.meter.report = loaded.share.report = channel.send
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_runner_app(engine, loaded.config.token, channel.send)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=60,
            timeout_graceful_shutdown=2,
        )
    )

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.002)  # uvicorn sets `started` and says nothing
        if server.started:
            resume_garbage_collection()
            channel.send({"event": EVENT_READY, "port": port, "info": engine.info.model_dump()})
        await task

    run_async(serve())
    return 0
