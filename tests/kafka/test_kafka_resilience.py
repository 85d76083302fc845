"""Kafka under a cut connection: an open plain subscription and an open group consumer
resume, and nothing a Publish returned for is lost on a reliable topic.

The broker (Tansu) is this module's own, behind a `FaultProxy`: it advertises the proxy's
address, so every client connection (bootstrap, producer, fetches, the group coordinator)
goes through the proxy and `cut()` resets them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from kafka_servers import KafkaServer, connection_for_test, drop_topics, endpoint_for_test

from sidecar.backends.pubsub import Message
from sidecar.backends.pubsub.kafka import KafkaBroker
from sidecar.connections.kafka import KafkaConnection

TIMEOUT = 15.0


class ProxiedTansu(KafkaServer):
    """Tansu listening on one port and advertising another (the proxy's)."""

    def __init__(self, data_dir: Path, advertised: int) -> None:
        super().__init__("tansu", data_dir)
        self.advertised = advertised

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--advertised-listener-url") + 1] = (
            f"tcp://127.0.0.1:{self.advertised}"
        )
        return command


@pytest.fixture
def proxy_port() -> int:
    from kafka_servers import free_port

    return free_port()


@pytest.fixture
def tansu(tmp_path: Path, proxy_port: int) -> Iterator[ProxiedTansu]:
    server = ProxiedTansu(tmp_path / "tansu", proxy_port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def proxy(tansu: ProxiedTansu, proxy_port: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", tansu.port, listen_port=proxy_port) as proxy:
        yield proxy


@pytest.fixture
async def connection(proxy: FaultProxy) -> AsyncIterator[KafkaConnection]:
    connection = connection_for_test("kafka", endpoint_for_test(proxy.address))
    yield connection
    await drop_topics(connection)
    await connection.close()


async def publish_retrying(broker: KafkaBroker, channel: str, payload: bytes) -> None:
    """Publish until the broker takes it (the producer reconnects after a cut)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                await broker.publish(channel, payload)
                return
            except Exception:
                await asyncio.sleep(0.1)


async def test_an_open_plain_subscription_resumes_after_the_connection_is_cut(
    connection: KafkaConnection, proxy: FaultProxy
) -> None:
    broker = KafkaBroker(connection, name="kafka")
    try:
        subscription = await broker.subscribe(["orders"], [], buffer_size=100)
        events = aiter(subscription)
        await broker.publish("orders", b"before")
        first = await asyncio.wait_for(anext(events), TIMEOUT)
        assert await proxy.cut() > 0
        await publish_retrying(broker, "orders", b"after")
        second = await asyncio.wait_for(anext(events), TIMEOUT)
    finally:
        await broker.close()
    assert isinstance(first, Message) and isinstance(second, Message)
    assert (first.payload, second.payload) == (b"before", b"after")


async def test_a_group_consumer_loses_nothing_published_across_a_cut(
    connection: KafkaConnection, proxy: FaultProxy
) -> None:
    broker = KafkaBroker(connection, name="kafka", visibility_timeout=2.0)
    published = [str(index).encode() for index in range(30)]
    received: set[bytes] = set()
    everything = asyncio.Event()
    try:
        subscription = await broker.consume(["jobs"], "workers", None, max_in_flight=50)

        async def read() -> None:
            async for message in subscription:
                received.add(message.payload)
                await broker.acknowledge("jobs", "workers", [message.message_id])
                if received >= set(published):
                    everything.set()

        reader = asyncio.create_task(read())
        for index, payload in enumerate(published):
            if index == 15:
                await proxy.cut()
            async with asyncio.timeout(TIMEOUT):
                while True:
                    try:
                        await broker.publish_reliable("jobs", payload)
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
        await asyncio.wait_for(everything.wait(), TIMEOUT * 2)
        reader.cancel()
    finally:
        await broker.close()
    assert set(published) <= received  # at least once: duplicates allowed, losses not


@pytest.fixture
def noida(tmp_path: Path) -> Iterator[KafkaServer]:
    server = KafkaServer("noida", tmp_path / "noida")
    server.start()
    yield server
    server.stop()


async def test_a_broker_restart_under_open_subscriptions_loses_nothing_acknowledged(
    noida: KafkaServer,
) -> None:
    # noida-db keeps its data across restarts, as a Kafka broker does.
    connection = connection_for_test("kafka", endpoint_for_test(noida.bootstrap))
    broker = KafkaBroker(connection, name="kafka", visibility_timeout=2.0)
    try:
        plain = aiter(await broker.subscribe(["news"], [], buffer_size=100))
        group = aiter(await broker.consume(["jobs"], "workers", None, max_in_flight=10))
        before = await broker.publish_reliable("jobs", b"before")
        await broker.publish("news", b"before")
        first = await asyncio.wait_for(anext(group), TIMEOUT)
        assert await broker.acknowledge("jobs", "workers", [first.message_id]) == 1
        event = await asyncio.wait_for(anext(plain), TIMEOUT)
        assert isinstance(event, Message) and event.payload == b"before"
        noida.stop()
        noida.start()
        await publish_retrying(broker, "news", b"after")
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    after = await broker.publish_reliable("jobs", b"after")
                    break
                except Exception:
                    await asyncio.sleep(0.1)
        news = await asyncio.wait_for(anext(plain), TIMEOUT)
        job = await asyncio.wait_for(anext(group), TIMEOUT * 2)
    finally:
        await broker.close()
        await drop_topics(connection)
        await connection.close()
    assert (first.message_id, first.payload) == (before, b"before")
    assert isinstance(news, Message) and news.payload == b"after"
    assert (job.message_id, job.payload) == (after, b"after")  # "before" stays acknowledged
