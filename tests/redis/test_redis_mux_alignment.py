"""`Multiplexer` verifies reply alignment after a caller abandons a command: if bytes were
lost inside the open connection (a byte-dropping middlebox; plain TCP never does this),
replies would otherwise resolve the wrong callers for as long as the connection lived."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import TracebackType

import pytest
import redis.asyncio as aioredis
from faultproxy import FaultProxy

from sidecar.config import CacheServiceConfig
from sidecar.connections.redis.client import create_client
from sidecar.connections.redis.mux import Multiplexer


def client_for(host: str, port: int) -> aioredis.Redis:
    return create_client(CacheServiceConfig(backend="redis", host=host, port=port))


def reply_end(buffer: bytes, start: int) -> int | None:
    """Where the RESP2 reply that begins at `start` ends, or None if it is incomplete."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, header, after = buffer[start : start + 1], buffer[start + 1 : line_end], line_end + 2
    if kind in (b"+", b"-", b":"):
        return after
    if kind == b"$":
        size = int(header)
        end = after if size < 0 else after + size + 2
        return end if end <= len(buffer) else None
    if kind == b"*":
        position: int | None = after
        for _ in range(max(int(header), 0)):
            assert position is not None
            position = reply_end(buffer, position)
            if position is None:
                return None
        return position
    raise ValueError(f"not a RESP2 reply: {buffer[start : start + 20]!r}")


class ReplyDropper:
    """A TCP proxy in front of Redis that swallows one whole reply when `drop_next` is set,
    as a middlebox losing bytes inside an open connection would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.drop_next = False
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ReplyDropper:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        pumps = [
            asyncio.create_task(self._forward(reader, up_writer)),
            asyncio.create_task(self._replies(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        for side in (writer, up_writer):
            side.transport.abort()

    @staticmethod
    async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65_536):
            writer.write(chunk)

    async def _replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        while chunk := await reader.read(65_536):
            buffer += chunk
            passed = []
            while (end := reply_end(buffer, 0)) is not None:
                reply, buffer = buffer[:end], buffer[end:]
                if self.drop_next:
                    self.drop_next = False
                    self.dropped += 1
                else:
                    passed.append(reply)
            writer.write(b"".join(passed))


@pytest.fixture
async def keys(redis_client: aioredis.Redis, key_prefix: str) -> AsyncIterator[list[str]]:
    """40 keys whose value is their own name."""
    names = [f"{key_prefix}k{i}" for i in range(40)]
    await redis_client.mset({name: name.encode() for name in names})
    yield names


async def get_rounds(mux: Multiplexer, keys: list[str], rounds: int) -> tuple[int, int]:
    """(wrong values, failed calls) over `rounds` rounds of concurrent Gets of every key."""
    wrong = failed = 0
    for _ in range(rounds):
        results = await asyncio.gather(
            *(asyncio.wait_for(mux.call("GET", key), 1.0) for key in keys),
            return_exceptions=True,
        )
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                failed += 1
            elif result != key.encode():
                wrong += 1
    return wrong, failed


async def test_a_lost_reply_resets_the_connection_and_no_caller_gets_another_keys_value(
    redis_address: tuple[str, int], keys: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sidecar.backends.redis")
    async with ReplyDropper(*redis_address) as proxy:
        mux = Multiplexer(client_for(proxy.host, proxy.port))
        await mux.call("PING")
        proxy.drop_next = True
        with pytest.raises(TimeoutError):  # its reply never comes; the caller gives up
            await asyncio.wait_for(mux.call("GET", keys[0]), 0.2)
        wrong, failed = await get_rounds(mux, keys, rounds=5)
        await mux.aclose()
    assert proxy.dropped == 1
    assert wrong == 0
    assert failed <= len(keys)  # only the round in flight when the mismatch was found
    warnings = [r for r in caplog.records if "out of step" in r.getMessage()]
    assert len(warnings) == 1


async def test_an_abandoned_reply_that_arrives_late_keeps_the_connection(
    redis_address: tuple[str, int], keys: list[str]
) -> None:
    async with FaultProxy(*redis_address) as proxy:
        mux = Multiplexer(client_for(proxy.host, proxy.port))
        await mux.call("PING")
        proxy.latency = 0.2
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(mux.call("GET", keys[0]), 0.05)
        proxy.latency = 0.0
        wrong, failed = await get_rounds(mux, keys, rounds=3)
        await mux.aclose()
        assert (wrong, failed, proxy.accepted) == (0, 0, 1)
