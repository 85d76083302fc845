"""RabbitMQ and NATS through a fault-injecting proxy (`tests/faultproxy.py`): a broker
connection cut under an open subscription resumes without restarting anything, and on a
reliable topic nothing whose Publish returned is lost (duplicates are allowed, and counted).

The backends are built as the sidecar builds them, on a connection to the proxy with a
reconnect interval of 0.1 s; the shared servers themselves are never touched. The publisher
retries a Publish that failed (as a client would on UNAVAILABLE), so a message may arrive
twice but never not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest
from broker_support import NATS, RABBITMQ, delete_broker_names
from faultproxy import FaultProxy
from redis_server import unique_prefix

from sidecar.backends.pubsub import Message, PubSubBackend, ReliablePubSub
from sidecar.backends.registry import build_backend
from sidecar.backends.spec import BuildContext
from sidecar.config import Config, PubSubServiceConfig, TimeoutsConfig
from sidecar.config.nats import NatsEndpoint
from sidecar.config.rabbitmq import RabbitMqEndpoint
from sidecar.connections import Connection
from sidecar.connections.nats import NatsConnection
from sidecar.connections.rabbitmq import RabbitMqConnection
from sidecar.errors import SidecarError
from sidecar.testing import FakeClock

T = TypeVar("T")
TIMEOUT = 15.0


def through(kind: str, port: int) -> Connection:
    """A connection of `kind` to the local server, by way of the proxy's `port`."""
    if kind == "rabbitmq":
        endpoint = RabbitMqEndpoint(
            url=f"amqp://127.0.0.1:{port}/", reconnect_interval=0.1, heartbeat=2
        )
        return RabbitMqConnection("faulty", endpoint, TimeoutsConfig())
    nats = NatsEndpoint(url=f"nats://127.0.0.1:{port}", reconnect_interval=0.1)
    # A JetStream request written into the socket that was just cut gets no answer: it
    # fails at the request timeout (the service's attempt timeout in the sidecar) and the
    # publisher retries it. 1 s keeps the test short.
    return NatsConnection("faulty", nats, TimeoutsConfig(request=1.0))


@pytest.fixture(params=["rabbitmq", "nats"])
async def setup(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[FaultProxy, Callable[..., PubSubBackend]]]:
    kind: str = request.param
    built: list[PubSubBackend] = []
    prefix = unique_prefix().replace(":", "-")
    async with FaultProxy(*(RABBITMQ if kind == "rabbitmq" else NATS)) as proxy:
        connection = through(kind, proxy.port)

        def make(**fields: Any) -> PubSubBackend:
            settings = PubSubServiceConfig(backend=kind, key_prefix=prefix, **fields)
            policies = Config(services={"pubsub": settings}).policies_for("pubsub")
            context: BuildContext[Any] = BuildContext(
                "pubsub", settings, policies, connection, FakeClock()
            )
            backend = cast(PubSubBackend, build_backend(context).backend)
            built.append(backend)
            return backend

        try:
            yield proxy, make
        finally:
            for backend in built:
                await backend.close()
            await connection.close()
            await delete_broker_names(built)


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """`call` until it stops failing with a sidecar error (the link is reconnecting)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                return await call()
            except SidecarError:
                await asyncio.sleep(0.05)


async def test_a_plain_subscription_resumes_after_the_connection_is_cut(
    setup: tuple[FaultProxy, Callable[..., PubSubBackend]],
) -> None:
    proxy, make = setup
    broker = make()
    subscription = await broker.subscribe(["orders"], ["news.*"], buffer_size=100)
    received: asyncio.Queue[Message] = asyncio.Queue()

    async def pump() -> None:
        async for event in subscription:
            if isinstance(event, Message):
                received.put_nowait(event)

    reader = asyncio.create_task(pump())
    try:
        await broker.publish("orders", b"before")
        assert (await asyncio.wait_for(received.get(), TIMEOUT)).payload == b"before"
        assert await proxy.cut() >= 1
        # At-most-once: what is published while the link is down is lost, so keep
        # publishing until one gets through the restored subscription.
        async with asyncio.timeout(TIMEOUT):
            while received.empty():
                with contextlib.suppress(SidecarError):
                    await broker.publish("news.eu", b"after")
                await asyncio.sleep(0.1)
        message = received.get_nowait()
        assert (message.channel, message.pattern, message.payload) == (
            "news.eu",
            "news.*",
            b"after",
        )
        assert broker.subscriber_count() == 1
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def test_a_reliable_topic_loses_nothing_acknowledged_by_publish_across_cuts(
    setup: tuple[FaultProxy, Callable[..., PubSubBackend]],
) -> None:
    proxy, make = setup
    backend = make(reliable_topics=["*"], visibility_timeout=0.5, max_deliveries=20)
    assert isinstance(backend, ReliablePubSub)
    subscription = await backend.consume(["orders"], "billing", "w1", max_in_flight=20)
    seen: dict[bytes, int] = {}

    async def consume() -> None:
        async for message in subscription:
            seen[message.payload] = seen.get(message.payload, 0) + 1
            with contextlib.suppress(SidecarError):  # not acked: delivered again later
                await backend.acknowledge("orders", "billing", [message.message_id])

    reader = asyncio.create_task(consume())
    accepted: list[bytes] = []
    try:
        for index in range(60):
            payload = str(index).encode()
            await retried(lambda payload=payload: backend.publish_reliable("orders", payload))
            accepted.append(payload)
            if index in (20, 40):
                await proxy.cut()
        async with asyncio.timeout(TIMEOUT):
            while not set(accepted) <= seen.keys():  # noqa: ASYNC110 - polling a dict
                await asyncio.sleep(0.05)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await subscription.close()
    lost = set(accepted) - seen.keys()
    duplicates = sum(count - 1 for count in seen.values())
    assert (lost, len(accepted)) == (set(), 60), f"duplicates: {duplicates}"
