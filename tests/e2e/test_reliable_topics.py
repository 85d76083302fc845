"""Reliable topics end to end: a real sidecar (in-process) on Redis Streams, driven through
the generated stubs: publish ids, consumer groups, Acknowledge, the in-flight limit,
redelivery, dead letters and replay, and bad input. Each test has its own key prefix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import redis.asyncio as aioredis
from streams_support import delete_prefix, fresh_prefix, redis_address
from support import error_info, eventually, grpcurl_path

from generated.integration.v1 import common_pb2, pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e
TIMEOUT = 5


def config(prefix: str, *, visibility: str = "30s", max_deliveries: int = 5) -> str:
    host, port = redis_address()
    return f"""
services:
  pubsub:
    type: pubsub
    backend: redis
    host: {host}
    port: {port}
    key_prefix: "{prefix}"
    reliable_topics: ["jobs.*", "audit"]
    visibility_timeout: {visibility}
    max_deliveries: {max_deliveries}
"""


@pytest.fixture
def prefix() -> Iterator[str]:
    value = fresh_prefix()
    yield value
    delete_prefix(value)


@pytest.fixture
async def sidecar(prefix: str) -> AsyncIterator[RunningServer]:
    async with serve_for_test(config(prefix)) as running:
        yield running


@pytest.fixture
async def pubsub(sidecar: RunningServer) -> AsyncIterator[PubSubServiceStub]:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        yield PubSubServiceStub(channel)


class Consumer:
    """A Subscribe stream with a group, read into a queue by a background task."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, started: pubsub_pb2.SubscriptionStarted):
        self.call = call
        self.started = started
        self.queue: asyncio.Queue[pubsub_pb2.PubSubMessage] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while (event := await self.call.read()) is not grpc.aio.EOF:
            self.queue.put_nowait(event.message)

    async def take(self, count: int) -> list[pubsub_pb2.PubSubMessage]:
        return [await asyncio.wait_for(self.queue.get(), TIMEOUT) for _ in range(count)]

    async def nothing_within(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.queue.empty()

    def cancel(self) -> None:
        self.call.cancel()
        self._task.cancel()


async def consume(pubsub: PubSubServiceStub, topic: str, **fields: object) -> Consumer:
    request = pubsub_pb2.SubscribeRequest(channels=[topic], **fields)  # type: ignore[arg-type]
    call = pubsub.Subscribe(request)
    first = await asyncio.wait_for(call.read(), TIMEOUT)
    assert first.WhichOneof("event") == "started"
    return Consumer(call, first.started)


async def publish(pubsub: PubSubServiceStub, topic: str, payload: bytes) -> str:
    reply = await pubsub.Publish(pubsub_pb2.PublishRequest(channel=topic, payload=payload))
    assert reply.message_id and reply.receivers == 0
    return reply.message_id


async def ack(pubsub: PubSubServiceStub, topic: str, group: str, *ids: str) -> int:
    reply = await pubsub.Acknowledge(
        pubsub_pb2.AcknowledgeRequest(topic=topic, group=group, message_ids=ids)
    )
    return reply.acknowledged


async def expect_invalid(call: object, field: str, reason: str = "INVALID_REQUEST") -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    info = error_info(caught.value)
    assert (info.reason, info.metadata["field"]) == (reason, field)


async def test_published_message_reaches_the_group_with_its_id_and_is_acknowledged(
    pubsub: PubSubServiceStub,
) -> None:
    consumer = await consume(pubsub, "jobs.email", group="mailers")
    assert consumer.started.group == "mailers" and consumer.started.consumer
    message_id = await publish(pubsub, "jobs.email", b"hello")
    (message,) = await consumer.take(1)
    assert (message.channel, message.payload) == ("jobs.email", b"hello")
    assert (message.message_id, message.delivery_count) == (message_id, 1)
    assert await ack(pubsub, "jobs.email", "mailers", message_id) == 1
    assert await ack(pubsub, "jobs.email", "mailers", message_id) == 0
    consumer.cancel()


async def grpcurl(address: str, method: str, data: dict[str, object]) -> dict[str, object]:
    """Call `method` with the real grpcurl binary (reflection, no proto files)."""
    process = await asyncio.create_subprocess_exec(
        *(grpcurl_path(), "-plaintext", "-d", json.dumps(data), address),
        f"integration.v1.PubSubService/{method}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    reply: dict[str, object] = json.loads(out)
    return reply


async def test_grpcurl_publishes_and_acknowledges_like_any_non_python_client(
    sidecar: RunningServer, pubsub: PubSubServiceStub
) -> None:
    consumer = await consume(pubsub, "jobs.cli", group="cli", consumer="c1")
    published = await grpcurl(
        sidecar.address, "Publish", {"channel": "jobs.cli", "payload": "aGk="}
    )
    (message,) = await consumer.take(1)
    assert (message.message_id, message.payload) == (published["message_id"], b"hi")
    acked = await grpcurl(
        sidecar.address,
        "Acknowledge",
        {"topic": "jobs.cli", "group": "cli", "message_ids": [message.message_id]},
    )
    assert acked == {"acknowledged": "1"}
    consumer.cancel()


async def test_subscriber_holds_at_most_max_in_flight_until_it_acknowledges(
    pubsub: PubSubServiceStub,
) -> None:
    ids = [await publish(pubsub, "jobs.resize", str(i).encode()) for i in range(5)]
    consumer = await consume(pubsub, "jobs.resize", group="g", consumer="w", max_in_flight=2)
    first = await consumer.take(2)
    await consumer.nothing_within(0.3)
    await ack(pubsub, "jobs.resize", "g", first[0].message_id, first[1].message_id)
    rest = await consumer.take(2)
    assert [m.message_id for m in first + rest] == ids[:4]
    consumer.cancel()


async def test_cancelling_a_group_subscription_frees_its_consumer(
    sidecar: RunningServer, pubsub: PubSubServiceStub
) -> None:
    backend = sidecar.integrations.resolve("pubsub", "").backend
    consumer = await consume(pubsub, "jobs.cancel", group="g", consumer="c")
    assert backend.subscriber_count() == 1
    consumer.cancel()
    await eventually(lambda: backend.subscriber_count() == 0)
    assert backend.subscriber_count() == 0


async def test_poison_message_is_dead_lettered_after_max_deliveries_then_replayed(
    prefix: str,
) -> None:
    async with (
        serve_for_test(config(prefix, visibility="200ms", max_deliveries=3)) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        pubsub = PubSubServiceStub(channel)
        consumer = await consume(pubsub, "audit", group="auditors", consumer="a1")
        poison = await publish(pubsub, "audit", b"poison")
        good = await publish(pubsub, "audit", b"good")
        deliveries: list[pubsub_pb2.PubSubMessage] = []
        while len([m for m in deliveries if m.message_id == poison]) < 3:
            (message,) = await consumer.take(1)
            deliveries.append(message)
            if message.message_id == good:
                await ack(pubsub, "audit", "auditors", good)
        read = pubsub_pb2.ReadDeadLettersRequest(topic="audit")
        for _ in range(100):
            letters = (await pubsub.ReadDeadLetters(read)).dead_letters
            if letters:
                break
            await asyncio.sleep(0.05)
        (letter,) = letters
        assert (letter.message_id, letter.payload, letter.delivery_count) == (poison, b"poison", 3)
        assert (letter.group, letter.consumer, letter.topic) == ("auditors", "a1", "audit")
        counts = [m.delivery_count for m in deliveries if m.message_id == poison]
        assert counts == [1, 2, 3]

        replay = await pubsub.ReplayDeadLetters(
            pubsub_pb2.ReplayDeadLettersRequest(
                topic="audit", dead_letter_ids=[letter.dead_letter_id]
            )
        )
        (replayed,) = replay.replayed
        (again,) = await consumer.take(1)
        assert (again.message_id, again.payload, again.delivery_count) == (
            replayed.message_id,
            b"poison",
            1,
        )
        assert await ack(pubsub, "audit", "auditors", again.message_id) == 1
        assert replay.remaining == 0
        assert not (await pubsub.ReadDeadLetters(read)).dead_letters
        consumer.cancel()


async def test_dead_letters_are_listed_page_by_page(prefix: str) -> None:
    async with (
        serve_for_test(config(prefix, visibility="100ms", max_deliveries=1)) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        pubsub = PubSubServiceStub(channel)
        ids = [await publish(pubsub, "jobs.bad", str(i).encode()) for i in range(3)]
        consumer = await consume(pubsub, "jobs.bad", group="g")
        await consumer.take(3)
        request = pubsub_pb2.ReadDeadLettersRequest(
            topic="jobs.bad", page=common_pb2.PageRequest(page_size=2)
        )
        for _ in range(100):
            first = await pubsub.ReadDeadLetters(request)
            if first.page.next_page_token:
                break
            await asyncio.sleep(0.05)
        request.page.page_token = first.page.next_page_token
        second = await pubsub.ReadDeadLetters(request)
        listed = [d.message_id for d in [*first.dead_letters, *second.dead_letters]]
        assert listed == ids and not second.page.next_page_token
        replay = await pubsub.ReplayDeadLetters(
            pubsub_pb2.ReplayDeadLettersRequest(topic="jobs.bad", replay_all=True)
        )
        assert (len(replay.replayed), replay.remaining) == (3, 0)
        consumer.cancel()


async def test_shutdown_ends_the_stream_with_ok_and_leaves_the_message_pending(
    prefix: str,
) -> None:
    host, port = redis_address()
    async with serve_for_test(config(prefix)) as sidecar:
        channel = grpc.aio.insecure_channel(sidecar.address)
        pubsub = PubSubServiceStub(channel)
        call = pubsub.Subscribe(
            pubsub_pb2.SubscribeRequest(channels=["jobs.keep"], group="g", consumer="c")
        )
        assert (await call.read()).WhichOneof("event") == "started"
        await publish(pubsub, "jobs.keep", b"x")
        assert (await asyncio.wait_for(call.read(), TIMEOUT)).message.payload == b"x"
        await sidecar.stop(grace=1.0)
        assert await asyncio.wait_for(call.read(), TIMEOUT) is grpc.aio.EOF
        assert await call.code() is grpc.StatusCode.OK
        await channel.close()
    client = aioredis.Redis(host=host, port=port)
    assert (await client.xpending(f"{prefix}jobs.keep", "g"))["pending"] == 1
    await client.aclose()


async def test_reliable_topic_without_a_group_is_invalid(pubsub: PubSubServiceStub) -> None:
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["audit"]))
    await expect_invalid(call.read(), "group")


async def test_consumer_without_a_group_is_invalid(pubsub: PubSubServiceStub) -> None:
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["chat"], consumer="c1"))
    await expect_invalid(call.read(), "group")


async def test_group_on_a_plain_channel_is_not_a_reliable_topic(pubsub: PubSubServiceStub) -> None:
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["chat"], group="g"))
    await expect_invalid(call.read(), "channels[0]", "TOPIC_NOT_RELIABLE")
    await expect_invalid(
        pubsub.Acknowledge(
            pubsub_pb2.AcknowledgeRequest(topic="chat", group="g", message_ids=["1-0"])
        ),
        "topic",
        "TOPIC_NOT_RELIABLE",
    )


async def test_malformed_ids_and_reserved_suffix_are_invalid(pubsub: PubSubServiceStub) -> None:
    await expect_invalid(
        pubsub.Acknowledge(
            pubsub_pb2.AcknowledgeRequest(topic="audit", group="g", message_ids=["1-0", "nope"])
        ),
        "message_ids[1]",
    )
    await expect_invalid(
        pubsub.Publish(pubsub_pb2.PublishRequest(channel="jobs.x:dlq", payload=b"x")), "channel"
    )
    await expect_invalid(
        pubsub.ReplayDeadLetters(pubsub_pb2.ReplayDeadLettersRequest(topic="audit")),
        "dead_letter_ids",
    )
    call = pubsub.Subscribe(
        pubsub_pb2.SubscribeRequest(channels=["audit"], patterns=["a*"], group="g")
    )
    await expect_invalid(call.read(), "patterns")


async def test_memory_backend_has_no_reliable_topics() -> None:
    async with serve_for_test() as sidecar, grpc.aio.insecure_channel(sidecar.address) as channel:
        pubsub = PubSubServiceStub(channel)
        call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["jobs.x"], group="g"))
        await expect_invalid(call.read(), "channels[0]", "TOPIC_NOT_RELIABLE")
