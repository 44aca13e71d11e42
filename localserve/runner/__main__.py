"""Entry point of a runner child process (`python -m localserve.runner`), run by the supervisor.

See ``api/runner.py`` for how it talks to the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from pathlib import Path

import uvicorn

from localserve.api.runner import (
    EVENT_LOAD_FAILED,
    EVENT_READY,
    EXIT_LOAD_FAILED,
    RunnerConfig,
    event_line,
)
from localserve.asgi.serving import bind_socket, run_async
from localserve.errors import LocalserveError
from localserve.runner.commands import ThreadShare, follow_daemon

log = logging.getLogger("localserve.runner")


def announce(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def follow_log_file(path: str) -> None:
    """Point stderr (our log, and llama.cpp's) at the model's log file: a spare runner was
    started before its model, and so before its log, was known."""
    with open(path, "ab") as log_file:
        os.dup2(log_file.fileno(), sys.stderr.fileno())


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s runner %(levelname)s %(message)s"
    )

    # Imported before the handshake: the daemon checks the model file meanwhile, or this is a
    # spare runner (daemon/spare.py) that waits here for a model with its imports done.
    # A portable build loads its backends only in llama_backends.load_backends, below.
    from localserve.runner import llama_backends
    from localserve.runner.app import create_runner_app
    from localserve.runner.engine import Engine, EngineConfig
    from localserve.runner.reporting import EventChannel

    line = sys.stdin.buffer.readline()
    if not line:
        return 0  # the daemon went away before giving us a model
    config = RunnerConfig.from_line(line)
    if config.log_file:
        follow_log_file(config.log_file)
    share = ThreadShare(config.engine.threads)
    threading.Thread(
        target=follow_daemon, args=(sys.stdin.buffer, share), name="daemon-commands", daemon=True
    ).start()

    log.info("llama.cpp: %s", config.engine_path.note)
    try:
        llama_backends.load_backends(config.engine_path.cpu_variant)
    except llama_backends.BackendLoadError as exc:
        log.error("load failed: %s", exc)
        announce(event_line(EVENT_LOAD_FAILED, message=str(exc)))
        return EXIT_LOAD_FAILED
    try:
        engine = Engine(
            EngineConfig(
                Path(config.model_path),
                config.model_id,
                config.engine,
                config.engine_path,
                Path(config.mmproj_path) if config.mmproj_path else None,
                config.chat_template,
            ),
            share,
        )
    except LocalserveError as exc:
        log.error("load failed: %s", exc)
        announce(event_line(EVENT_LOAD_FAILED, message=str(exc)))
        return EXIT_LOAD_FAILED
    log.info("loaded %s: %s", config.model_id, engine.info)

    # From here on stdout is the event channel to the daemon (reporting.py).
    channel = EventChannel.take_stdout()
    engine.meter.report = share.report = channel.send
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_runner_app(engine, config.token, channel.send)
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
            await asyncio.sleep(0.01)
        if server.started:
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
