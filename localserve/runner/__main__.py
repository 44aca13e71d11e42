"""Entry point of a runner child process (`python -m localserve.runner`), run by the supervisor.

See ``api/runner.py`` for how it talks to the supervisor.

Start-up is ordered for launch to first answer. The binding (llama_cpp) is imported first;
then one thread waits for the handshake and loads the weights (llama.cpp's load, like the KV
cache's allocation after it, runs in C without the GIL), while this thread imports the rest of
the engine and then the HTTP side (Starlette, the request models, uvicorn: about 45 ms), which
the load does not need. The HTTP side waits for the weights (at most ``HTTP_IMPORTS_WAIT_S``):
at a cold start the daemon is still importing while they load, and a third busy thread on a
2-vCPU machine made their load take 110 ms instead of 66; once they are in, llama.cpp makes the
batching context (zeroing its KV cache, about 75 ms, one thread) and a vCPU is free. A spare
runner (daemon/spare.py) has done all this by the time its handshake comes, but for the load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from localserve.api.runner import (
    EVENT_CHECKING,
    EVENT_LOAD_FAILED,
    EVENT_READY,
    EXIT_LOAD_FAILED,
    RunnerConfig,
    event_line,
)
from localserve.errors import LocalserveError
from localserve.program import (
    lean_start_environment,
    pause_garbage_collection,
    resume_garbage_collection,
)
from localserve.runner.commands import ThreadShare, follow_daemon

if TYPE_CHECKING:
    from localserve.runner.engine import Engine

log = logging.getLogger("localserve.runner")
HTTP_IMPORTS_WAIT_S = 0.3  # the longest the HTTP side's imports wait for the weights
ResultT = TypeVar("ResultT")


class LoadFailed(Exception):
    """The model could not be loaded; the message says why, for the daemon."""


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


def receive_and_load(weights_loaded: threading.Event) -> Loaded | None:
    """Wait for the handshake, then load its model (``weights_loaded`` set once its weights
    are in); None when the daemon went away first."""
    from localserve.runner import llama_backends
    from localserve.runner.weights import EngineConfig, load_weights

    line = sys.stdin.buffer.readline()
    if not line:
        return None
    config = RunnerConfig.from_line(line)
    if config.log_file:
        follow_log_file(config.log_file)
    share = ThreadShare(config.engine.threads)
    threading.Thread(
        target=follow_daemon, args=(sys.stdin.buffer, share), name="daemon-commands", daemon=True
    ).start()

    path = config.engine_path
    log.info("llama.cpp: %s", path.note)
    try:
        if path.trial:  # no verdict yet: this runner is the engine check (api/runner.py)
            ranked = None
            if path.cpu_variant == "best":
                ranked = llama_backends.ranked_variants(llama_backends.variant_scores())
                path = dataclasses.replace(path, cpu_variant=llama_backends.best_variant(ranked))
            announce(event_line(EVENT_CHECKING, cpu_variant=path.cpu_variant, ranked=ranked))
        llama_backends.load_backends(path.cpu_variant)
        engine_config = EngineConfig(
            Path(config.model_path),
            config.model_id,
            config.engine,
            path,
            Path(config.mmproj_path) if config.mmproj_path else None,
            config.chat_template,
        )
        weights = load_weights(engine_config)  # in C, while the main thread imports the engine
        weights_loaded.set()
        from localserve.runner.engine import Engine

        engine = Engine(engine_config, share, weights)
        if path.trial:
            engine.check_decodes(path)
            log.info(
                "engine check passed in this runner: %s CPU kernels, extra buffer types %s",
                path.cpu_variant or "built-in",
                "on" if path.extra_buffers else "off",
            )
    except (llama_backends.BackendLoadError, LocalserveError) as exc:
        raise LoadFailed(str(exc)) from exc
    except RuntimeError as exc:  # the check's decodes failed, short of a crash
        raise LoadFailed(f"llama.cpp failed its engine check: {exc}") from exc
    log.info("loaded %s: %s", config.model_id, engine.info)
    return Loaded(config, share, engine)


def in_background(work: Callable[[], ResultT]) -> Future[ResultT]:
    """``work()`` on a daemon thread (an executor's thread would be waited for at exit, and
    this one may be blocked reading stdin)."""
    future: Future[ResultT] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to whoever waits for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="load", daemon=True).start()
    return future


def main() -> int:
    pause_garbage_collection()  # for the imports; resumed once serving
    lean_start_environment()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s runner %(levelname)s %(message)s"
    )
    # The loading thread imports only the binding and weights.py before it loads the weights
    # (in C, without the GIL), and this thread imports the rest of the engine meanwhile, then
    # the HTTP side once the weights are in (module docstring).
    import localserve.runner.weights

    weights_loaded = threading.Event()
    loading = in_background(lambda: receive_and_load(weights_loaded))
    loading.add_done_callback(lambda _: weights_loaded.set())  # a failed load too
    import localserve.runner.engine  # noqa: F401

    weights_loaded.wait(HTTP_IMPORTS_WAIT_S)
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


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the stdin watcher thread is blocked in a read, and finalizing
    # around it aborts the process; nothing is left to clean up at this point.
    os._exit(code)
