"""`tests/faultproxy.py` itself: it forwards faithfully, and each switch does what it says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from faultproxy import FaultProxy


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, int]]:
    """A TCP echo server."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65_536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield "127.0.0.1", server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def proxy(echo: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*echo) as running:
        yield running


async def round_trip(proxy: FaultProxy, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    finally:
        writer.close()


async def test_bytes_pass_through_unchanged_both_ways(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 1000
    assert await round_trip(proxy, payload) == payload
    assert proxy.accepted == 1


async def test_a_rate_paces_the_bytes_and_keeps_them_whole(proxy: FaultProxy) -> None:
    proxy.rate = 2_000_000
    payload = bytes(range(256)) * 1024  # 256 KiB: at least 0.13 s each way at 2 MB/s
    started = time.monotonic()
    assert await round_trip(proxy, payload) == payload
    assert time.monotonic() - started >= 0.13


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.latency = 0.1
    started = time.monotonic()
    await round_trip(proxy, b"ping")
    assert time.monotonic() - started >= 0.2


async def test_cut_resets_every_open_connection(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(b"x")
    await reader.readexactly(1)
    assert (await proxy.cut(), proxy.connections) == (1, 0)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        writer.write(b"y")
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()


async def test_stop_accepting_refuses_new_connections_until_start_accepting(
    proxy: FaultProxy,
) -> None:
    await proxy.stop_accepting()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(proxy.host, proxy.port)
    await proxy.start_accepting()
    assert await round_trip(proxy, b"back") == b"back"


async def test_paused_holds_bytes_until_resumed(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    proxy.paused = True
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    proxy.paused = False
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    writer.close()


async def test_an_unreachable_target_closes_the_client_connection() -> None:
    async with FaultProxy("127.0.0.1", 1) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()


async def test_resetting_accepts_then_resets_every_new_connection(proxy: FaultProxy) -> None:
    proxy.resetting = True
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        writer.write(b"ping")
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(4), 5)
    writer.close()
    proxy.resetting = False
    assert await round_trip(proxy, b"ping") == b"ping"
