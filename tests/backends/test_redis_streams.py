"""`RedisStreams` against a real Redis: consumer groups, acknowledgements, visibility
timeout, dead letters, replay and the in-flight limit (each test under its own key prefix)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis_server import OwnedRedis
from streams_support import delete_prefix, fresh_prefix, redis_address

from sidecar.backends.pubsub import (
    MemoryBroker,
    ReliableMessage,
    ReliablePubSub,
    ReliableSubscription,
)
from sidecar.backends.pubsub.joined import ReliableBroker
from sidecar.backends.pubsub.redis_streams import RedisStreams, with_reliable_topics
from sidecar.config import PubSubServiceConfig, RedisConnectionSettings
from sidecar.connections.redis.client import create_client
from sidecar.errors import FailedPrecondition, Unavailable

TIMEOUT = 5


def redis_client(host: str, port: int) -> aioredis.Redis:
    """A client built as the sidecar builds its own (no retries inside redis-py)."""
    return create_client(RedisConnectionSettings(host=host, port=port), connect_timeout=1.0)


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    host, port = redis_address()
    connection = redis_client(host, port)
    yield connection
    await connection.aclose()


@pytest.fixture
def prefix() -> Iterator[str]:
    value = fresh_prefix()
    yield value
    delete_prefix(value)


@pytest.fixture
async def streams(client: aioredis.Redis, prefix: str) -> AsyncIterator[RedisStreams]:
    # A visibility timeout no test reaches by accident, however slow the machine.
    backend = RedisStreams(client, key_prefix=prefix, visibility_timeout=10, max_deliveries=3)
    yield backend
    await backend.close()


@pytest.fixture
async def impatient(client: aioredis.Redis, prefix: str) -> AsyncIterator[RedisStreams]:
    """Redelivers after 200 ms and dead-letters after 3 deliveries."""
    backend = RedisStreams(client, key_prefix=prefix, visibility_timeout=0.2, max_deliveries=3)
    yield backend
    await backend.close()


@contextlib.asynccontextmanager
async def reading(
    subscription: ReliableSubscription,
) -> AsyncIterator[asyncio.Queue[ReliableMessage]]:
    """Pipe the subscription into a queue for the duration of the block."""
    queue: asyncio.Queue[ReliableMessage] = asyncio.Queue()

    async def pump() -> None:
        async for message in subscription:
            queue.put_nowait(message)

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        await subscription.close()
        await asyncio.wait_for(task, TIMEOUT)


async def take(queue: asyncio.Queue[ReliableMessage], count: int) -> list[ReliableMessage]:
    return [await asyncio.wait_for(queue.get(), TIMEOUT) for _ in range(count)]


async def nothing_more(queue: asyncio.Queue[ReliableMessage], within: float = 0.3) -> None:
    await asyncio.sleep(within)
    assert queue.empty(), [m.message_id for m in list(queue._queue)]  # type: ignore[attr-defined]


def test_redis_streams_is_a_reliable_pubsub(streams: RedisStreams) -> None:
    assert isinstance(streams, ReliablePubSub)


async def test_published_message_is_delivered_with_its_id_and_first_delivery_count(
    streams: RedisStreams,
) -> None:
    subscription = await streams.consume(["orders"], "billing", "c1", max_in_flight=10)
    message_id = await streams.publish_reliable("orders", b"\x00order", {"k": "v"})
    async with reading(subscription) as queue:
        (message,) = await take(queue, 1)
    assert (message.topic, message.message_id, message.payload) == (
        "orders",
        message_id,
        b"\x00order",
    )
    assert dict(message.metadata) == {"k": "v"}
    assert message.delivery_count == 1
    assert message.published_at > 0


async def test_messages_published_before_the_group_existed_are_delivered(
    streams: RedisStreams,
) -> None:
    ids = [await streams.publish_reliable("early", str(i).encode()) for i in range(3)]
    subscription = await streams.consume(["early"], "late-group", "c1", max_in_flight=10)
    async with reading(subscription) as queue:
        assert [m.message_id for m in await take(queue, 3)] == ids


async def test_consumers_of_one_group_share_the_messages_each_getting_distinct_ones(
    streams: RedisStreams,
) -> None:
    first = await streams.consume(["jobs"], "workers", "a", max_in_flight=100)
    second = await streams.consume(["jobs"], "workers", "b", max_in_flight=100)
    async with reading(first) as queue_a, reading(second) as queue_b:
        ids = {await streams.publish_reliable("jobs", str(i).encode()) for i in range(40)}
        received: list[ReliableMessage] = []
        while len(received) < 40:
            for queue in (queue_a, queue_b):
                while not queue.empty():
                    received.append(queue.get_nowait())
            await asyncio.sleep(0.01)
        await nothing_more(queue_a, 0.05)
        await nothing_more(queue_b, 0.05)
    # Each message went to exactly one of them.
    assert sorted(m.message_id for m in received) == sorted(ids)


async def test_every_group_receives_every_message(streams: RedisStreams) -> None:
    billing = await streams.consume(["orders"], "billing", "c", max_in_flight=10)
    shipping = await streams.consume(["orders"], "shipping", "c", max_in_flight=10)
    message_id = await streams.publish_reliable("orders", b"x")
    async with reading(billing) as queue_b, reading(shipping) as queue_s:
        assert [m.message_id for m in await take(queue_b, 1)] == [message_id]
        assert [m.message_id for m in await take(queue_s, 1)] == [message_id]


async def test_consumer_holds_at_most_max_in_flight_until_acknowledgements_make_room(
    streams: RedisStreams,
) -> None:
    ids = [await streams.publish_reliable("work", str(i).encode()) for i in range(10)]
    subscription = await streams.consume(["work"], "g", "c", max_in_flight=3)
    async with reading(subscription) as queue:
        first = await take(queue, 3)
        await nothing_more(queue, 0.1)  # well within the visibility timeout
        assert await streams.acknowledge("work", "g", [first[0].message_id]) == 1
        (fourth,) = await take(queue, 1)
    assert [m.message_id for m in [*first, fourth]] == ids[:4]


async def test_acknowledging_twice_counts_once(streams: RedisStreams) -> None:
    message_id = await streams.publish_reliable("acks", b"x")
    subscription = await streams.consume(["acks"], "g", "c", max_in_flight=5)
    async with reading(subscription) as queue:
        await take(queue, 1)
        assert await streams.acknowledge("acks", "g", [message_id]) == 1
        assert await streams.acknowledge("acks", "g", [message_id]) == 0
        await nothing_more(queue, 0.5)  # acknowledged: never delivered again


async def test_unacknowledged_message_goes_to_another_consumer_after_the_visibility_timeout(
    client: aioredis.Redis, prefix: str
) -> None:
    streams = RedisStreams(client, key_prefix=prefix, visibility_timeout=1.0, max_deliveries=5)
    message_id = await streams.publish_reliable("tasks", b"x")
    slow = await streams.consume(["tasks"], "g", "slow", max_in_flight=1)
    async with reading(slow) as slow_queue:
        (held,) = await take(slow_queue, 1)
        # `slow` keeps holding it, so after 1 s `fast` takes it over (`slow` itself would
        # take it back only two checks later).
        fast = await streams.consume(["tasks"], "g", "fast", max_in_flight=1)
        async with reading(fast) as fast_queue:
            (redelivered,) = await take(fast_queue, 1)
            await nothing_more(slow_queue, 0.01)
    await streams.close()
    assert (held.message_id, held.delivery_count) == (message_id, 1)
    assert (redelivered.message_id, redelivered.delivery_count) == (message_id, 2)


async def test_reconnecting_consumer_first_gets_back_what_it_had_not_acknowledged(
    client: aioredis.Redis, prefix: str
) -> None:
    streams = RedisStreams(client, key_prefix=prefix, visibility_timeout=60, max_deliveries=5)
    ids = [await streams.publish_reliable("inbox", str(i).encode()) for i in range(6)]
    first = await streams.consume(["inbox"], "g", "worker-1", max_in_flight=4)
    async with reading(first) as queue:
        delivered = await take(queue, 4)
    await streams.acknowledge("inbox", "g", [delivered[0].message_id])
    again = await streams.consume(["inbox"], "g", "worker-1", max_in_flight=2)
    async with reading(again) as queue:
        back = await take(queue, 2)
        await nothing_more(queue, 0.1)  # two in flight: the limit
        await streams.acknowledge("inbox", "g", [m.message_id for m in back])
        rest = await take(queue, 2)
        await streams.acknowledge("inbox", "g", [m.message_id for m in rest])
        rest += await take(queue, 1)
    await streams.close()
    assert [(m.message_id, m.delivery_count) for m in back] == [(ids[1], 2), (ids[2], 2)]
    assert [(m.message_id, m.delivery_count) for m in rest] == [
        (ids[3], 2),
        (ids[4], 1),
        (ids[5], 1),
    ]


async def test_message_never_acknowledged_moves_to_dead_letters_after_max_deliveries(
    impatient: RedisStreams, client: aioredis.Redis, prefix: str
) -> None:
    poison = await impatient.publish_reliable("payments", b"poison", {"why": "bad"})
    subscription = await impatient.consume(["payments"], "g", "c", max_in_flight=5)
    async with reading(subscription) as queue:
        deliveries = await take(queue, 3)
        for _ in range(100):  # the third visibility timeout passes, then it moves
            if await impatient.read_dead_letters("payments", after=None, count=10):
                break
            await asyncio.sleep(0.05)
        await nothing_more(queue, 0.3)
    assert [(m.message_id, m.delivery_count) for m in deliveries] == [
        (poison, 1),
        (poison, 2),
        (poison, 3),
    ]
    (letter,) = await impatient.read_dead_letters("payments", after=None, count=10)
    assert (letter.message_id, letter.payload, dict(letter.metadata)) == (
        poison,
        b"poison",
        {"why": "bad"},
    )
    assert (letter.delivery_count, letter.group, letter.consumer) == (3, "g", "c")
    assert await client.xpending(f"{prefix}payments", "g") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_replayed_dead_letter_is_delivered_again_as_a_new_message(
    impatient: RedisStreams,
) -> None:
    poison = await impatient.publish_reliable("replays", b"retry me")
    subscription = await impatient.consume(["replays"], "g", "c", max_in_flight=5)
    async with reading(subscription) as queue:
        await take(queue, 3)
        for _ in range(50):
            letters = await impatient.read_dead_letters("replays", after=None, count=10)
            if letters:
                break
            await asyncio.sleep(0.05)
        outcome = await impatient.replay_dead_letters(
            "replays", [letters[0].dead_letter_id], limit=10
        )
        (replayed,) = await take(queue, 1)
    assert letters[0].message_id == poison
    assert [r.dead_letter_id for r in outcome.replayed] == [letters[0].dead_letter_id]
    assert (replayed.message_id, replayed.payload) == (outcome.replayed[0].message_id, b"retry me")
    assert replayed.delivery_count == 1 and replayed.message_id != poison
    assert outcome.remaining == 0
    assert await impatient.read_dead_letters("replays", after=None, count=10) == []


async def test_dead_letters_are_read_in_pages_and_replayed_all_at_once(
    client: aioredis.Redis, prefix: str
) -> None:
    streams = RedisStreams(client, key_prefix=prefix, visibility_timeout=0.05, max_deliveries=1)
    ids = [await streams.publish_reliable("many", str(i).encode()) for i in range(5)]
    subscription = await streams.consume(["many"], "g", "c", max_in_flight=5)
    async with reading(subscription) as queue:
        await take(queue, 5)
        for _ in range(100):
            if len(await streams.read_dead_letters("many", after=None, count=10)) == 5:
                break
            await asyncio.sleep(0.05)
    first = await streams.read_dead_letters("many", after=None, count=2)
    second = await streams.read_dead_letters("many", after=first[-1].dead_letter_id, count=10)
    assert [d.message_id for d in first + second] == ids
    outcome = await streams.replay_dead_letters("many", None, limit=3)
    assert (len(outcome.replayed), outcome.remaining) == (3, 2)
    missing = await streams.replay_dead_letters("many", [first[0].dead_letter_id], limit=10)
    assert missing.not_found == (first[0].dead_letter_id,)
    await streams.close()


async def test_closing_a_consumer_leaves_its_unacknowledged_messages_pending(
    streams: RedisStreams, client: aioredis.Redis, prefix: str
) -> None:
    await streams.publish_reliable("keep", b"x")
    subscription = await streams.consume(["keep"], "g", "named", max_in_flight=5)
    async with reading(subscription) as queue:
        await take(queue, 1)
    assert streams.consumer_count() == 0
    summary = await client.xpending(f"{prefix}keep", "g")
    assert summary["pending"] == 1
    assert summary["consumers"] == [{"name": b"named", "pending": 1}]


async def test_generated_consumer_name_leaves_the_group_when_it_holds_nothing(
    streams: RedisStreams, client: aioredis.Redis, prefix: str
) -> None:
    subscription = await streams.consume(["tidy"], "g", None, max_in_flight=5)
    assert subscription.consumer.startswith("sidecar-")
    async with reading(subscription) as queue:
        message_id = await streams.publish_reliable("tidy", b"x")
        await take(queue, 1)
        await streams.acknowledge("tidy", "g", [message_id])
    assert await client.xinfo_consumers(f"{prefix}tidy", "g") == []


async def test_a_cancelled_reader_ends_its_consumer_even_if_the_read_ignores_the_cancel(
    streams: RedisStreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py was seen to swallow the cancellation of a blocking XREADGROUP and finish the
    # read first (seconds); no real server can make that happen on demand, so the real read
    # is wrapped to do exactly that once, against the real Redis.
    ops = streams._ops
    real_read = ops.read_new
    reading_now = asyncio.Event()

    async def stubborn_read(*args: object, **kwargs: object) -> list[ReliableMessage]:
        reading_now.set()
        try:
            return await real_read(*args, **kwargs)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await asyncio.sleep(3)
            return []

    monkeypatch.setattr(ops, "read_new", stubborn_read)
    subscription = await streams.consume(["stubborn"], "g", "c", max_in_flight=5)

    async def pump() -> None:
        async for _ in subscription:
            pass

    reader = asyncio.create_task(pump())
    await asyncio.wait_for(reading_now.wait(), TIMEOUT)
    reader.cancel()
    done, _ = await asyncio.wait({reader}, timeout=1)
    assert done == {reader} and reader.cancelled()
    assert streams.consumer_count() == 0


async def test_closing_the_backend_ends_open_consumers(streams: RedisStreams) -> None:
    subscription = await streams.consume(["end"], "g", "c", max_in_flight=5)
    seen: list[ReliableMessage] = []

    async def pump() -> None:
        async for message in subscription:
            seen.append(message)

    task = asyncio.create_task(pump())
    await asyncio.sleep(0.05)
    await streams.close()
    await asyncio.wait_for(task, TIMEOUT)
    with pytest.raises(Unavailable):
        await streams.publish_reliable("end", b"x")


async def test_a_key_of_another_type_is_a_failed_precondition(
    streams: RedisStreams, client: aioredis.Redis, prefix: str
) -> None:
    await client.set(f"{prefix}plain", b"string")
    with pytest.raises(FailedPrecondition) as caught:
        await streams.publish_reliable("plain", b"x")
    assert caught.value.reason == "WRONG_TYPE"


async def test_unreachable_redis_is_unavailable() -> None:
    client = redis_client("127.0.0.1", 1)
    streams = RedisStreams(client)
    with pytest.raises(Unavailable):
        await streams.publish_reliable("t", b"x")
    await streams.close()
    await client.aclose()


async def test_consumer_ends_with_unavailable_when_redis_goes_away() -> None:
    server = OwnedRedis()
    server.start()
    client = redis_client("127.0.0.1", server.port)
    streams = RedisStreams(client, visibility_timeout=1.0)
    try:
        subscription = await streams.consume(["gone"], "g", "c", max_in_flight=5)
        iterator = aiter(subscription)
        reading = asyncio.ensure_future(anext(iterator))
        await asyncio.sleep(0.1)  # blocked in XREADGROUP
        server.kill()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(reading, TIMEOUT)
        assert streams.consumer_count() == 0
    finally:
        server.kill()
        await streams.close()
        await client.aclose()


async def test_one_consumer_reads_several_topics_within_one_in_flight_limit(
    streams: RedisStreams,
) -> None:
    a = [await streams.publish_reliable("multi.a", f"a{i}".encode()) for i in range(3)]
    b = [await streams.publish_reliable("multi.b", f"b{i}".encode()) for i in range(3)]
    subscription = await streams.consume(["multi.a", "multi.b"], "g", "c", max_in_flight=1)
    received: list[ReliableMessage] = []
    async with reading(subscription) as queue:
        for _ in range(6):
            (message,) = await take(queue, 1)
            await nothing_more(queue, 0.02)  # one at a time: the limit holds across topics
            received.append(message)
            await streams.acknowledge(message.topic, "g", [message.message_id])
    assert sorted(m.message_id for m in received if m.topic == "multi.a") == a
    assert sorted(m.message_id for m in received if m.topic == "multi.b") == b


def test_without_reliable_topics_the_plain_broker_is_used_as_is(client: aioredis.Redis) -> None:
    plain = MemoryBroker()
    settings = PubSubServiceConfig(backend="redis")
    assert with_reliable_topics(plain, client, settings) is plain
    wrapped = with_reliable_topics(
        plain, client, PubSubServiceConfig(backend="redis", reliable_topics=("jobs.*",))
    )
    assert isinstance(wrapped, ReliableBroker) and isinstance(wrapped, ReliablePubSub)
