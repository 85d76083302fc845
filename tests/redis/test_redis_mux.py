"""`Multiplexer`: one pipelined connection shared by concurrent callers, replies matched in
order, failures reported with redis-py's exception types."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from faultproxy import FaultProxy
from redis import exceptions as rex
from redis_server import free_port

from sidecar.config import CacheServiceConfig
from sidecar.connections.redis.client import create_client
from sidecar.connections.redis.mux import Multiplexer


def client_for(host: str, port: int) -> aioredis.Redis:
    return create_client(CacheServiceConfig(backend="redis", host=host, port=port))


async def test_concurrent_first_calls_share_one_connection_attempt(
    redis_address: tuple[str, int],
) -> None:
    async with FaultProxy(*redis_address) as proxy:
        mux = Multiplexer(client_for(proxy.host, proxy.port))
        replies = await asyncio.gather(*(mux.call("ECHO", str(i)) for i in range(20)))
        assert replies == [str(i).encode() for i in range(20)]
        assert proxy.accepted == 1
        await mux.aclose()


async def test_a_caller_that_gives_up_does_not_shift_the_others_replies(
    redis_address: tuple[str, int],
) -> None:
    mux = Multiplexer(client_for(*redis_address))
    await mux.call("PING")
    first = asyncio.ensure_future(mux.call("ECHO", "first"))
    abandoned = asyncio.ensure_future(mux.call("ECHO", "abandoned"))
    third = asyncio.ensure_future(mux.call("ECHO", "third"))
    abandoned.cancel()
    assert (await first, await third) == (b"first", b"third")
    assert await mux.call("ECHO", "after") == b"after"
    await mux.aclose()


async def test_error_reply_raises_response_error_for_that_command_only(
    redis_address: tuple[str, int],
) -> None:
    mux = Multiplexer(client_for(*redis_address))
    results = await asyncio.gather(
        mux.call("NOSUCHCOMMAND"), mux.call("ECHO", "fine"), return_exceptions=True
    )
    assert isinstance(results[0], rex.ResponseError)
    assert results[1] == b"fine"
    await mux.aclose()


async def test_refused_connection_raises_connection_error() -> None:
    mux = Multiplexer(client_for("127.0.0.1", free_port()))
    with pytest.raises(rex.ConnectionError):
        await mux.call("PING")
    await mux.aclose()


async def test_close_fails_calls_in_flight_and_later_calls(
    redis_address: tuple[str, int],
) -> None:
    async with FaultProxy(*redis_address) as proxy:
        mux = Multiplexer(client_for(proxy.host, proxy.port))
        await mux.call("PING")
        proxy.paused = True
        in_flight = asyncio.ensure_future(mux.call("PING"))
        await asyncio.sleep(0.05)
        await mux.aclose()
        with pytest.raises(rex.ConnectionError):
            await in_flight
        with pytest.raises(rex.ConnectionError):
            await mux.call("PING")
        proxy.paused = False


async def test_close_during_connect_fails_the_waiting_call_with_connection_error(
    redis_address: tuple[str, int],
) -> None:
    async with FaultProxy(*redis_address) as proxy:
        proxy.paused = True  # the handshake (CLIENT SETNAME) never gets its reply
        client = create_client(
            CacheServiceConfig(backend="redis", host=proxy.host, port=proxy.port),
            client_name="sidecar:mux-test",
        )
        mux = Multiplexer(client)
        waiting = asyncio.ensure_future(mux.call("PING"))
        await asyncio.sleep(0.05)
        await mux.aclose()
        with pytest.raises(rex.ConnectionError):
            await waiting
        proxy.paused = False


async def test_a_refused_password_leaves_no_unretrieved_handshake_reply() -> None:
    """AUTH fails, and the SELECT (and CLIENT SETNAME) pipelined after it fail with NOAUTH: every
    reply is retrieved, so asyncio logs no "Future exception was never retrieved"."""
    import gc

    from redis_server import OwnedRedis

    server = OwnedRedis(None, "--requirepass", "right-password")
    server.start()
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context["message"]))
    try:
        settings = CacheServiceConfig(
            backend="redis", port=server.port, password="wrong", database=1
        )
        mux = Multiplexer(create_client(settings))
        with pytest.raises(rex.AuthenticationError):
            await mux.call("PING")
        await mux.aclose()
        del mux
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        server.kill()
    assert unretrieved == []
