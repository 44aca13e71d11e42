"""The runner's internal OpenAI-compatible API, reachable only on loopback with the process token.

Generation happens on the scheduler's thread (``scheduler.py``), which batches concurrent
requests; embeddings run on a worker thread of their own. Each streamed piece crosses to the event
loop through ``call_soon_threadsafe``; when the client falls behind, queued pieces are merged
into one chunk instead of piling up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import struct
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from localserve.api.errors import CLIENT_CLOSED_REQUEST, api_error_from, error_body
from localserve.api.requests import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerationRequest,
)
from localserve.api.sse import DONE, sse_data
from localserve.asgi.disconnect import ClientDisconnected, cancel_on_disconnect
from localserve.errors import InvalidRequestError, LocalserveError
from localserve.runner.chat_turn import ChatTurn, chat_turn
from localserve.runner.engine import Engine
from localserve.runner.openai_format import (
    ResponseShape,
    embeddings_response,
)
from localserve.runner.reasoning import OutputReader, Split
from localserve.runner.reporting import Report, request_event
from localserve.runner.text import GenerationStats
from localserve.runner.tools import ToolCall

log = logging.getLogger("localserve.runner")
T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=BaseModel)
_DONE = object()
MODEL_FAILED = error_body("The model failed while serving this request.", "server_error")


class GenerationJob:
    """One generation's output, written by the scheduler thread and read on the event loop."""

    def __init__(self, prompt_tokens: int, report: Report | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._report = report
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.stats = GenerationStats(prompt_tokens=prompt_tokens)

    # Called on the scheduler thread (the Sink protocol).
    def emit(self, text: str) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, text)

    def close(self, error: BaseException | None = None) -> None:
        if error is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, error)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, _DONE)
        log_generation(self.stats)
        if self._report is not None:
            self._report(request_event(self.stats))

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces in order; pieces that queued up while the reader was busy come merged."""
        while True:
            item = await self._queue.get()
            merged: list[str] = []
            while True:
                if item is _DONE:
                    if merged:
                        yield "".join(merged)
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, str)
                merged.append(item)
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            yield "".join(merged)


def log_generation(stats: GenerationStats) -> None:
    ttft = stats.ttft_seconds
    rate = stats.generation_tokens_per_second
    log.info(
        "prompt %d tokens, generated %d (%s), time to first token %s, %s",
        stats.prompt_tokens,
        stats.completion_tokens,
        stats.finish_reason,
        f"{ttft * 1000:.0f} ms" if ttft is not None else "-",
        f"{rate:.1f} tok/s" if rate is not None else "-",
    )
    if stats.images:
        log.info("images: %d, %d of them from the cache", stats.images, stats.images_cached)
    drafted = stats.accepted_draft_tokens + stats.rejected_draft_tokens
    if drafted:
        log.info(
            "prompt lookup: %d of %d drafted tokens accepted", stats.accepted_draft_tokens, drafted
        )


class RunnerAPI:
    def __init__(self, engine: Engine, token: str, report: Report | None) -> None:
        self.engine = engine
        self.report = report
        self._expected_auth = f"Bearer {token}".encode()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")

    def authorized(self, request: Request) -> bool:
        presented = request.headers.get("authorization", "").encode()
        return secrets.compare_digest(presented, self._expected_auth)

    async def on_engine_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def chat(self, request: Request) -> Response:
        body = await parse(request, ChatCompletionRequest)
        turn = await self.turn(body)
        shape = ResponseShape(self.engine.info.model_id, chat=True)
        return await self._generate(request, body, turn.prompt, shape, turn)

    async def tokenize_chat(self, request: Request) -> Response:
        """How many prompt tokens a chat request renders to (Anthropic's count_tokens)."""
        body = await parse(request, ChatCompletionRequest)
        return JSONResponse({"input_tokens": len((await self.turn(body)).prompt)})

    async def turn(self, body: ChatCompletionRequest) -> ChatTurn:
        """The chat's prompt; with images on a thread, as decoding them takes a while."""
        if body.has_images():
            return await asyncio.to_thread(chat_turn, self.engine, body)
        return chat_turn(self.engine, body)

    async def completions(self, request: Request) -> Response:
        body = await parse(request, CompletionRequest)
        prompt = self.engine.completion_prompt(body.prompt_text, body.suffix)
        shape = ResponseShape(self.engine.info.model_id, chat=False)
        return await self._generate(request, body, prompt, shape)

    async def embeddings(self, request: Request) -> Response:
        body = await parse(request, EmbeddingRequest)
        vectors, tokens = await self.on_engine_thread(lambda: self.engine.embed(body.inputs))
        payload = embeddings_response(self.engine.info.model_id, vectors, tokens)
        if body.encoding_format == "base64":
            for item in payload["data"]:
                vector = item["embedding"]
                packed = struct.pack(f"<{len(vector)}f", *vector)
                item["embedding"] = base64.b64encode(packed).decode("ascii")
        return JSONResponse(payload)

    async def info(self, request: Request) -> Response:
        return JSONResponse(self.engine.info.model_dump())

    async def _generate(
        self,
        request: Request,
        body: GenerationRequest,
        prompt: list[int],
        shape: ResponseShape,
        turn: ChatTurn | None = None,
    ) -> Response:
        """Generate and answer; a chat ``turn``'s reader splits out thoughts and tool calls."""
        turn = turn or ChatTurn(prompt)
        generation = self.engine.prepare(
            prompt, body.sampling(), turn.grammar, turn.thought, turn.images
        )
        job = GenerationJob(len(prompt), self.report)
        self.engine.submit(generation, job)
        if body.stream:
            events = stream_events(job, shape, body.include_usage, turn.reader)
            return StreamingResponse(events, media_type="text/event-stream")

        async def collect() -> str:
            return "".join([piece async for piece in job.pieces()])

        try:
            text = await cancel_on_disconnect(request, collect())
        finally:
            job.cancelled.set()
        if turn.reader is None:
            return JSONResponse(shape.whole(text, job.stats))
        split = turn.reader.feed(text)
        rest, calls = turn.reader.finish()
        split += rest
        return JSONResponse(shape.whole(split.content, job.stats, calls, split.reasoning))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def stream_events(
    job: GenerationJob,
    shape: ResponseShape,
    include_usage: bool,
    reader: OutputReader | None = None,
) -> AsyncIterator[bytes]:
    try:
        first = shape.first_chunk()
        if first is not None:
            yield first
        async for piece in job.pieces():
            if reader is None:
                yield shape.text_chunk(piece)
                continue
            for chunk in split_chunks(shape, reader.feed(piece)):
                yield chunk
        calls: list[ToolCall] = []
        if reader is not None:
            rest, calls = reader.finish()
            for chunk in split_chunks(shape, rest):
                yield chunk
            for index, call in enumerate(calls):
                yield shape.tool_call_chunk(index, call)
        yield shape.final_chunk(job.stats, calls)
        if include_usage:
            yield shape.usage_chunk(job.stats)
    except LocalserveError as exc:
        yield sse_data(error_dict(exc))
    except Exception:
        log.exception("Generation failed mid-stream")
        yield sse_data(MODEL_FAILED)
    finally:
        # Runs on normal end and when the client disconnects (the task is cancelled):
        # either way the scheduler drops the sequence at its next step.
        job.cancelled.set()
    yield DONE


def split_chunks(shape: ResponseShape, split: Split) -> list[bytes]:
    """A piece's thought (first) and answer, each in its own chunk."""
    chunks = [shape.reasoning_chunk(split.reasoning)] if split.reasoning else []
    return chunks + ([shape.text_chunk(split.content)] if split.content else [])


def error_dict(exc: LocalserveError) -> dict[str, Any]:
    err = api_error_from(exc)
    return error_body(err.message, err.error_type, err.code, err.param)


async def parse(request: Request, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidRequestError(f"Invalid request: {exc.errors()[0]['msg']}") from exc


def create_runner_app(engine: Engine, token: str, report: Report | None = None) -> Starlette:
    """The runner's internal API; ``report`` receives an event for every finished generation."""
    api = RunnerAPI(engine, token, report)

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            if not api.authorized(request):
                return JSONResponse(error_body("Invalid runner token.", "auth_error"), 401)
            try:
                response: Response = await handler(request)
            except LocalserveError as exc:
                err = api_error_from(exc)
                return JSONResponse(error_dict(exc), status_code=err.status_code)
            except ClientDisconnected:
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            except Exception:
                log.exception("Request to %s failed", request.url.path)
                return JSONResponse(MODEL_FAILED, status_code=500)
            return response

        return endpoint

    routes = [
        Route("/v1/chat/completions", guarded(api.chat), methods=["POST"]),
        Route("/v1/completions", guarded(api.completions), methods=["POST"]),
        Route("/v1/embeddings", guarded(api.embeddings), methods=["POST"]),
        Route("/tokenize/chat", guarded(api.tokenize_chat), methods=["POST"]),
        Route("/info", guarded(api.info), methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        api.close()
        engine.close()

    return Starlette(routes=routes, lifespan=lifespan)
