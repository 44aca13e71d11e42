"""The gateway's transport to runners, against a real HTTP/1.1 server on loopback port 0 that
answers as each test scripts it (``Script``): streamed chunks arrive in order, connections are
kept alive, and every failure is the httpx error the local backend maps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from localserve.router.runner_transport import RunnerTransport

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Script:
    """A server answering each request with the next of ``answers``."""

    answers: list[Answer]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                await self.answers.pop(0)(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
        finally:
            writer.close()


async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
    writer.write(b"transfer-encoding: chunked\r\n\r\n")
    for piece in (b"data: one\n\n", b"data: two\n\n"):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def sized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b'HTTP/1.1 404 Not Found\r\ncontent-length: 13\r\n\r\n{"error": {}}')
    await writer.drain()


async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    while True:  # until writing fails: the client closed the connection
        writer.write(b"6\r\ntoken \r\n")
        await writer.drain()
        await asyncio.sleep(0.01)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)


async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ntoken \r\n")
    await writer.drain()
    writer.transport.abort()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()


@contextlib.asynccontextmanager
async def serving(script: Script) -> AsyncIterator[httpx.AsyncClient]:
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    timeout = httpx.Timeout(0.5, connect=1.0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=timeout, transport=RunnerTransport()
    ) as client:
        try:
            yield client
        finally:
            server.close()


async def post(client: httpx.AsyncClient) -> httpx.Response:
    request = client.build_request("POST", "/v1/completions", content=b'{"model": "m"}')
    return await client.send(request, stream=True)


def test_a_stream_arrives_in_order_and_its_connection_is_kept_alive() -> None:
    async def scenario() -> tuple[list[bytes], Script]:
        script = Script([chunked, sized])
        async with serving(script) as client:
            response = await post(client)
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            pieces = [chunk async for chunk in response.aiter_raw()]
            await response.aclose()
            second = await post(client)
            assert second.status_code == 404
            assert await second.aread() == b'{"error": {}}'
            await second.aclose()
        return pieces, script

    pieces, script = asyncio.run(scenario())
    assert b"".join(pieces) == b"data: one\n\ndata: two\n\n"
    assert len(pieces) == 2  # each chunk as it came, not the whole body at the end
    assert script.connections == 1
    assert script.requests[0].startswith(b"POST /v1/completions HTTP/1.1\r\n")
    assert script.requests[0].endswith(b'\r\n\r\n{"model": "m"}')


def test_closing_an_unfinished_answer_closes_its_connection() -> None:
    async def scenario() -> None:
        script = Script([endless])
        async with serving(script) as client:
            response = await post(client)
            async for chunk in response.aiter_raw():
                assert chunk.startswith(b"token ")
                break
            await response.aclose()  # as the gateway does when its client went away
            await asyncio.wait_for(script.closed_by_client.wait(), 2)

    asyncio.run(scenario())


def test_a_connection_the_runner_closed_while_idle_is_not_reused() -> None:
    async def answer_and_hang_up(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await sized(reader, w)
        w.close()  # the runner's keep-alive timeout, between two requests

    async def scenario() -> Script:
        script = Script([answer_and_hang_up])
        async with serving(script) as client:
            first = await post(client)
            await first.aread()
            await first.aclose()
            await asyncio.sleep(0.05)
            script.answers.append(sized)
            second = await post(client)
            assert second.status_code == 404
            await second.aclose()
        return script

    assert asyncio.run(scenario()).connections == 2


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (silent, httpx.ReadTimeout),
        (cut_short, httpx.ReadError),
        (garbage, httpx.RemoteProtocolError),
    ],
)
def test_a_failing_runner_raises_the_httpx_error_for_it(
    answer: Answer, error: type[httpx.HTTPError]
) -> None:
    async def scenario() -> None:
        async with serving(Script([answer])) as client:
            with pytest.raises(error):
                response = await post(client)
                await response.aread()

    asyncio.run(scenario())


def test_no_runner_listening_is_a_connect_error() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with httpx.AsyncClient(transport=RunnerTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(f"http://127.0.0.1:{port}/health", content=b"")
            with pytest.raises(httpx.UnsupportedProtocol):
                await client.post(f"https://127.0.0.1:{port}/health", content=b"")

    asyncio.run(scenario())
