"""What only `RedisBroker` promises, beyond the conformance suite: one shared subscriber
connection, reference-counted SUBSCRIBEs, the envelope, receiver counts across sidecars,
and reconnection."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from faultproxy import FaultProxy
from redis_server import free_port
from support import RedisConnect

from sidecar.backends.pubsub import Message, Subscription, SubscriptionEvent
from sidecar.backends.pubsub.redis import RedisBroker
from sidecar.config import PubSubServiceConfig
from sidecar.errors import Unavailable

TIMEOUT = 5


@pytest.fixture
def make_broker(redis_connect: RedisConnect) -> Callable[..., RedisBroker]:
    """`make_broker(settings, keepalive=...)`: a broker on a connection of its own."""

    def make(settings: PubSubServiceConfig, keepalive: float = 10.0) -> RedisBroker:
        connection = redis_connect(settings, "pubsub", keepalive=keepalive)
        return RedisBroker(connection, name="pubsub", key_prefix=settings.key_prefix)

    return make


@pytest.fixture
async def broker(
    pubsub_settings: PubSubServiceConfig, make_broker: Callable[..., RedisBroker]
) -> AsyncIterator[RedisBroker]:
    backend = make_broker(pubsub_settings)
    yield backend
    await backend.close()


# One iterator per subscription: a dropped iterator is closed when collected, and closing
# it closes the subscription.
_ITERATORS: weakref.WeakKeyDictionary[Subscription, AsyncIterator[SubscriptionEvent]] = (
    weakref.WeakKeyDictionary()
)


async def next_event(subscription: Subscription) -> SubscriptionEvent:
    iterator = _ITERATORS.get(subscription)
    if iterator is None:
        iterator = _ITERATORS[subscription] = aiter(subscription)
    return await asyncio.wait_for(anext(iterator), TIMEOUT)


async def next_message(subscription: Subscription) -> Message:
    event = await next_event(subscription)
    assert isinstance(event, Message)
    return event


async def subscriber_connections(client: aioredis.Redis, name: str) -> int:
    clients = await client.client_list()
    return sum(1 for entry in clients if entry.get("name") == name)


async def test_many_subscriptions_share_one_subscriber_connection(
    broker: RedisBroker, redis_client: aioredis.Redis
) -> None:
    for index in range(20):
        await broker.subscribe([f"c{index}", "shared"], ["p.*"], buffer_size=8)
    assert await subscriber_connections(redis_client, broker.connection_name) == 1


async def test_last_subscriber_leaving_a_channel_unsubscribes_it_on_redis(
    broker: RedisBroker, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    first = await broker.subscribe(["orders"], [], buffer_size=8)
    second = await broker.subscribe(["orders"], [], buffer_size=8)
    channel = key_prefix + "orders"
    await first.close()
    await broker.sync()
    still = dict(await redis_client.pubsub_numsub(channel))[channel.encode()]
    await second.close()
    await broker.sync()
    after = dict(await redis_client.pubsub_numsub(channel))[channel.encode()]
    assert (still, after) == (1, 0)


async def test_raw_message_from_another_publisher_arrives_as_it_is(
    broker: RedisBroker, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    await redis_client.publish(key_prefix + "orders", b"plain bytes")
    message = await next_message(subscription)
    assert (message.payload, dict(message.metadata)) == (b"plain bytes", {})
    assert message.published_at > 1_600_000_000


async def test_pattern_message_names_the_channel_and_pattern_without_the_prefix(
    broker: RedisBroker,
) -> None:
    subscription = await broker.subscribe([], ["news.*"], buffer_size=8)
    await broker.publish("news.eu", b"x", {"k": "v"})
    message = await next_message(subscription)
    assert (message.channel, message.pattern, dict(message.metadata)) == (
        "news.eu",
        "news.*",
        {"k": "v"},
    )


async def test_key_prefix_with_glob_characters_is_escaped_in_patterns(
    make_broker: Callable[..., RedisBroker],
    pubsub_settings: PubSubServiceConfig,
) -> None:
    starred = pubsub_settings.model_copy(update={"key_prefix": pubsub_settings.key_prefix + "*"})
    other = pubsub_settings.model_copy(update={"key_prefix": pubsub_settings.key_prefix + "x"})
    broker, neighbour = make_broker(starred), make_broker(other)
    subscription = await broker.subscribe([], ["a*"], buffer_size=8)
    assert await neighbour.publish("ab", b"not for you") == 0
    assert await broker.publish("ab", b"mine") == 1
    assert (await next_message(subscription)).payload == b"mine"
    await broker.close()
    await neighbour.close()


async def test_publish_counts_each_other_sidecar_once_per_channel(
    make_broker: Callable[..., RedisBroker],
    broker: RedisBroker,
    pubsub_settings: PubSubServiceConfig,
) -> None:
    other = make_broker(pubsub_settings)
    for _ in range(3):
        await other.subscribe(["orders"], [], buffer_size=8)
    await broker.subscribe(["orders"], [], buffer_size=8)
    await broker.subscribe(["orders"], [], buffer_size=8)
    # 2 local subscriptions exactly, plus the other sidecar's shared connection once.
    assert await broker.publish("orders", b"x") == 3
    await other.close()


async def test_subscription_resumes_after_its_connection_is_killed(
    broker: RedisBroker, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    subscription = await broker.subscribe(["orders"], ["o*"], buffer_size=8)
    await kill_connection(redis_client, broker.connection_name)
    await until_subscribed(redis_client, key_prefix + "orders", patterns=1)
    assert await broker.publish("orders", b"after") == 2
    gaps = [await next_event(subscription) for _ in range(2)]
    events = [await next_message(subscription) for _ in range(2)]
    assert [gap.ended_at is not None for gap in gaps] == [False, True]  # type: ignore[union-attr]
    assert sorted((m.pattern or "", m.payload) for m in events) == [
        ("", b"after"),
        ("o*", b"after"),
    ]
    assert broker.subscriber_count() == 1


async def kill_connection(client: aioredis.Redis, name: str) -> None:
    """CLIENT KILL the connection called `name` (only ours: the server is shared)."""
    [entry] = [e for e in await client.client_list() if e.get("name") == name]
    await client.client_kill_filter(_id=entry["id"])


async def until_subscribed(client: aioredis.Redis, channel: str, *, patterns: int = 0) -> None:
    """Wait until Redis has a subscriber on `channel` (and `patterns` pattern subscriptions
    in all, counting only this test's prefix-specific patterns)."""
    for _ in range(200):
        numsub = dict(await client.pubsub_numsub(channel))[channel.encode()]
        if numsub >= 1 and await client.pubsub_numpat() >= patterns:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{channel} was never subscribed again")


async def test_silent_subscriber_connection_is_replaced_after_keepalive_periods(
    make_broker: Callable[..., RedisBroker], redis_address: tuple[str, int], key_prefix: str
) -> None:
    async with FaultProxy(*redis_address) as proxy:
        settings = PubSubServiceConfig(
            backend="redis", host=proxy.host, port=proxy.port, key_prefix=key_prefix
        )
        broker = make_broker(settings, keepalive=0.1)
        subscription = await broker.subscribe(["orders"], [], buffer_size=8)
        proxy.paused = True
        await asyncio.sleep(0.6)  # > 3 keepalive periods without a reply
        proxy.paused = False
        for _ in range(100):
            if await broker.publish("orders", b"after") == 1:
                break
            await asyncio.sleep(0.05)
        assert (await next_message(subscription)).payload == b"after"
        await broker.close()


async def test_subscribe_while_redis_is_unreachable_fails_with_unavailable(
    make_broker: Callable[..., RedisBroker],
) -> None:
    settings = PubSubServiceConfig(backend="redis", host="127.0.0.1", port=free_port())
    broker = make_broker(settings)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(broker.subscribe(["orders"], [], buffer_size=8), TIMEOUT)
    with pytest.raises(Unavailable):  # while reconnecting, at once
        await asyncio.wait_for(broker.subscribe(["orders"], [], buffer_size=8), 0.5)
    assert broker.subscriber_count() == 0
    await broker.close()


async def test_closing_the_broker_fails_a_subscribe_still_waiting(
    make_broker: Callable[..., RedisBroker],
    redis_address: tuple[str, int],
) -> None:
    async with FaultProxy(*redis_address) as proxy:
        settings = PubSubServiceConfig(backend="redis", host=proxy.host, port=proxy.port)
        broker = make_broker(settings)
        await broker.ping()
        proxy.paused = True
        pending = asyncio.create_task(broker.subscribe(["orders"], [], buffer_size=8))
        await asyncio.sleep(0.1)
        await broker.close()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(pending, TIMEOUT)
        proxy.paused = False
