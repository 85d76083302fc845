"""`AiohttpTransport` under an `httpx2.AsyncClient`, against real sockets: a request leaves
byte for byte as httpx2's own transport sends it, a streamed body arrives as it is written,
httpx2 still decodes, redirects and maps errors, and the pool reuses a finished connection,
closes an unfinished one and keeps to its size. (TLS, mutual TLS and `server_name` run in
tests/conformance/connections on this same transport.)"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest
from redis_server import free_port

from sidecar.connections.http.transport import AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]
"""Answers one request on a connection, given its head (request line and headers)."""


class ScriptedServer:
    """An HTTP/1.1 server whose answers each test writes byte by byte; it keeps every
    request's head and body and counts the TCP connections it accepted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                self.bodies.append(await _read_body(reader, head))
                await self.handler(reader, writer, head)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lines = head.lower().split(b"\r\n")[1:]
    if b"transfer-encoding: chunked" in lines:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return body
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            return await reader.readexactly(int(value))
    return b""


def _answer(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunks(*pieces: bytes) -> bytes:
    """`pieces` as HTTP chunks (no terminating chunk)."""
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)


def _writes_then_closes(data: bytes) -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return answer


async def _ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
    writer.write(_answer("200 OK", b"fine"))
    await writer.drain()


def _client(base_url: str, **limits: float | None) -> httpx2.AsyncClient:
    transport = AiohttpTransport(None, httpx2.Limits(**limits))  # type: ignore[arg-type]
    return httpx2.AsyncClient(base_url=base_url, transport=transport, timeout=5.0)


@pytest.fixture
async def ok_server() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer(_ok) as server:
        yield server


def _header_lines(head: bytes) -> list[bytes]:
    return sorted(line.lower() for line in head.split(b"\r\n")[1:] if line)


async def test_a_request_leaves_as_httpx2s_own_transport_sends_it(
    ok_server: ScriptedServer,
) -> None:
    """The path (percent-escapes a caller sent included), the query, every header and the
    body are httpx2's: aiohttp neither re-quotes the URL nor adds headers of its own."""
    path = "/v1/a%2Fb/c%20d?q=%26x&r=%2E%2E"
    request = {"content": b'{"n": 1}', "headers": {"x-team": "search"}}
    async with _client(ok_server.url) as ours:
        answered = await ours.post(path, **request)  # type: ignore[arg-type]
    async with httpx2.AsyncClient(base_url=ok_server.url) as stock:
        await stock.post(path, **request)  # type: ignore[arg-type]
    assert answered.status_code == 200 and answered.content == b"fine"
    sent, expected = ok_server.heads
    assert sent.split(b"\r\n")[0] == b"POST /v1/a%2Fb/c%20d?q=%26x&r=%2E%2E HTTP/1.1"
    assert sent.split(b"\r\n")[0] == expected.split(b"\r\n")[0]
    assert _header_lines(sent) == _header_lines(expected)
    assert ok_server.bodies == [b'{"n": 1}', b'{"n": 1}']


async def test_a_streamed_body_arrives_as_the_server_writes_it() -> None:
    """Each chunk reaches the reader before the server writes the next one: nothing is
    held back to fill a buffer (the AI relay depends on it)."""
    received = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(CHUNKED_HEAD)
        for piece in (b"data: one\n\n", b"data: two\n\n"):
            writer.write(_chunks(piece))
            await writer.drain()
            await asyncio.wait_for(received.wait(), 5)
            received.clear()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with ScriptedServer(stream) as server, _client(server.url) as client:
        chunks = []
        async with client.stream("GET", "/events") as response:
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                received.set()
    assert chunks == [b"data: one\n\n", b"data: two\n\n"]


async def test_chunks_written_together_are_still_read_one_by_one() -> None:
    """One read is at most one HTTP chunk, as with httpx2's own transport: an upstream
    that sends an event per chunk is relayed an event per message (coalesce_chunks off)."""

    burst = _writes_then_closes(CHUNKED_HEAD + _chunks(b"one", b"two", b"three") + b"0\r\n\r\n")
    async with (
        ScriptedServer(burst) as server,
        _client(server.url) as client,
        client.stream("GET", "/") as response,
    ):
        await asyncio.sleep(0.05)  # all of it is in the socket before the first read
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert chunks == [b"one", b"two", b"three"]


async def test_a_body_of_unknown_length_streams_out_chunked(ok_server: ScriptedServer) -> None:
    async def produce() -> AsyncIterator[bytes]:
        yield b"start-"
        yield b"a" * 100_000

    async with _client(ok_server.url) as client:
        response = await client.post("/upload", content=produce())
    assert response.status_code == 200
    assert ok_server.bodies == [b"start-" + b"a" * 100_000]
    assert _header_lines(ok_server.heads[0]).count(b"transfer-encoding: chunked") == 1


async def test_a_failing_body_producer_raises_its_own_error(ok_server: ScriptedServer) -> None:
    """Not a network error: the caller's stream broke, and the caller sees why."""

    async def produce() -> AsyncIterator[bytes]:
        yield b"start-"
        raise LookupError("the caller's second head")

    async with _client(ok_server.url) as client:
        with pytest.raises(LookupError, match="second head"):
            await client.post("/upload", content=produce())


async def test_httpx2_still_decodes_the_body_and_follows_redirects() -> None:
    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        if head.startswith(b"GET /old "):
            writer.write(_answer("302 Found", b"", "Location: /new"))
        else:
            writer.write(_answer("200 OK", gzip.compress(b"unpacked"), "Content-Encoding: gzip"))
        await writer.drain()

    async with ScriptedServer(answer) as server, _client(server.url) as client:
        response = await client.get("/old", follow_redirects=True)
    assert response.content == b"unpacked"
    assert [r.status_code for r in response.history] == [302]
    assert response.http_version == "HTTP/1.1"
    assert server.accepted == 1  # both requests on one kept-alive connection


async def test_a_stalled_body_is_httpx2s_read_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await reader.read()  # until the client gives up

    async with ScriptedServer(stall) as server, _client(server.url) as client:
        with pytest.raises(httpx2.ReadTimeout):
            await client.get("/", timeout=httpx2.Timeout(5.0, read=0.2))


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", b"SPDY/9 banana\r\n\r\n"],
    ids=["cut-short", "malformed"],
)
async def test_a_broken_answer_is_a_remote_protocol_error(answer: bytes) -> None:
    async with (
        ScriptedServer(_writes_then_closes(answer)) as server,
        _client(server.url) as client,
    ):
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get("/")


async def test_what_arrived_before_a_cut_is_read_before_the_error() -> None:
    """aiohttp raises a broken body's error before the data it had buffered: the
    transport hands that data out first (an AI answer's last tokens, already paid for)."""
    cut = _writes_then_closes(CHUNKED_HEAD + _chunks(b"one ", b"two ", b"three"))
    received = b""
    async with (
        ScriptedServer(cut) as server,
        _client(server.url) as client,
        client.stream("GET", "/") as response,
    ):
        await asyncio.sleep(0.05)  # the data and the cut are both in before the first read
        with pytest.raises(httpx2.RemoteProtocolError):
            async for chunk in response.aiter_raw():
                received += chunk
    assert received == b"one two three"


@pytest.mark.parametrize(("size", "accepted"), [(12_000, True), (20_000, False)])
async def test_a_response_header_may_be_up_to_16_kib(size: int, accepted: bool) -> None:
    """A large token or cookie header passes, as it did on httpx2's own transport; an
    unbounded one does not."""
    big = _writes_then_closes(_answer("200 OK", b"fine", "X-Token: " + "t" * size))
    async with ScriptedServer(big) as server, _client(server.url) as client:
        if accepted:
            assert len((await client.get("/")).headers["x-token"]) == size
        else:
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.get("/")


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with _client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(httpx2.ConnectError):
            await client.get("/")


async def test_a_finished_body_keeps_its_connection_and_an_unfinished_one_closes_it() -> None:
    """Closing a response before its end closes the connection (which is how an upstream
    learns a caller went away); reading it to the end returns it to the pool."""

    async def long(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        body = b"x" * (1 << 20) if head.startswith(b"GET /long ") else b"short"
        writer.write(_answer("200 OK", body))
        await writer.drain()

    async with ScriptedServer(long) as server, _client(server.url) as client:
        await client.get("/a")
        await client.get("/b")
        assert server.accepted == 1
        transport = client._transport
        assert isinstance(transport, AiohttpTransport)
        async with client.stream("GET", "/long") as response:
            assert transport.pool_usage() == (1, 0)
            async for _ in response.aiter_raw():
                break
        assert transport.pool_usage() == (0, 0)
        await client.get("/c")
        assert server.accepted == 2
        assert transport.pool_usage() == (0, 1)


async def test_the_pool_keeps_to_its_size_and_a_caller_waits_at_most_its_pool_timeout() -> None:
    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        if head.startswith(b"GET /held "):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")  # and no more
        else:
            writer.write(_answer("200 OK", b"fine"))
        await writer.drain()

    async with ScriptedServer(answer) as server, _client(server.url, max_connections=1) as client:
        async with client.stream("GET", "/held"):
            with pytest.raises(httpx2.TimeoutException):
                await client.get("/", timeout=httpx2.Timeout(5.0, connect=0.1, pool=0.1))
        response = await client.get("/")  # the held connection's place is free again
    assert response.status_code == 200
    assert server.accepted == 2
