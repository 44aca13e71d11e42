"""The gateway's HTTP transport to its runners: HTTP/1.1 on loopback, parsed by httptools.

Every streamed token crosses this hop. httpx's own transport (httpcore, h11 and anyio, in
Python) cost the daemon about 0.1 ms of CPU per chunk, and on a machine with as many cores as
llama.cpp has threads that time is taken from the compute threads. This transport speaks only
what runners need, with the C parser uvicorn uses too: a request with its whole body, an answer
with a length or in chunks, kept-alive connections. Closing an answer before its end closes the
connection, which is how a runner learns that its client went away.

It plugs into ``httpx.AsyncClient(transport=...)``, so callers, timeouts and errors stay
httpx's: ``ConnectError``/``ConnectTimeout`` before a request was sent, ``ReadTimeout`` when a
runner is silent for longer than the read timeout, ``ReadError``/``RemoteProtocolError`` when
the connection breaks or the answer is malformed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx

IDLE_PER_RUNNER = 32  # kept-alive connections per runner, as the httpx client had
HIGH_WATER = 1 << 20  # bytes buffered before reading from the runner pauses


class _Connection(asyncio.Protocol):
    """One connection to a runner, answering one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._begin()

    def _begin(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.head_done = False
        self.complete = False
        self.keep_alive = False  # known at the answer's end (httptools forgets it after)
        self.error: Exception | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    def send(self, request_bytes: bytes) -> None:
        """Start the next request (on a fresh or kept-alive connection)."""
        self._begin()
        assert self.transport is not None
        self.transport.write(request_bytes)

    async def wait(self, timeout: float | None) -> None:
        """Until more of the answer came, it ended, or it failed; ReadTimeout after ``timeout``."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._time_out, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(httpx.ReadTimeout("The runner sent nothing in time."))

    def _fail(self, error: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._wake()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"The runner's answer is malformed: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(httpx.ReadError("The runner closed the connection."))

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()


class _AnswerStream(httpx.AsyncByteStream):
    def __init__(
        self,
        transport: RunnerTransport,
        key: tuple[str, int],
        connection: _Connection,
        read_timeout: float | None,
    ) -> None:
        self._transport = transport
        self._key = key
        self._connection: _Connection | None = connection
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while connection is not None:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                self._finish()
                return
            elif connection.error is not None:
                raise connection.error
            else:
                await connection.wait(self._read_timeout)

    async def aclose(self) -> None:
        self._finish()

    def _finish(self) -> None:
        """Keep the connection for the next request if its answer was read to the end and the
        runner keeps it alive; else close it (an unfinished answer: the runner stops)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        read_whole = connection.complete and not connection.chunks
        if read_whole and connection.keep_alive and not connection.closed:
            self._transport.keep(self._key, connection)
        else:
            connection.close()


class RunnerTransport(httpx.AsyncBaseTransport):
    """Plain HTTP/1.1 to runners on loopback (see the module docstring)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    def keep(self, key: tuple[str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < IDLE_PER_RUNNER:
            idle.append(connection)
        else:
            connection.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or url.host is None:
            raise httpx.UnsupportedProtocol(f"Runners speak plain HTTP on loopback, not {url}.")
        key = (url.host, url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        head = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1".encode("ascii")]
        head += [name + b": " + value for name, value in request.headers.raw]
        request_bytes = b"\r\n".join(head) + b"\r\n\r\n" + body

        connection = self._idle_connection(key)
        reused = connection is not None
        if connection is None:
            connection = await self._connect(key, timeouts.get("connect"))
        try:
            await self._exchange(connection, request_bytes, timeouts.get("read"))
        except httpx.ReadError:
            if not reused:
                raise
            # A kept-alive connection the runner had closed as we wrote: it read nothing.
            connection = await self._connect(key, timeouts.get("connect"))
            await self._exchange(connection, request_bytes, timeouts.get("read"))
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=_AnswerStream(self, key, connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key, [])
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, key[0], key[1]), timeout
            )
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(
                f"Connecting to the runner at port {key[1]} timed out."
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(f"Cannot connect to the runner: {exc}") from exc
        return connection

    async def _exchange(
        self, connection: _Connection, request_bytes: bytes, read_timeout: float | None
    ) -> None:
        """Send the request and wait for the answer's head."""
        connection.send(request_bytes)
        try:
            while not connection.head_done:
                if connection.error is not None:
                    raise connection.error
                await connection.wait(read_timeout)
        except BaseException:
            connection.close()
            raise


__all__ = ["RunnerTransport"]
