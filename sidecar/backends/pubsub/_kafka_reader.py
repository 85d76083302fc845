"""`PlainReader`: the one Kafka consumer behind every plain subscription of a broker.

Like Redis's subscriber link, a sidecar reads each plain topic once however many gRPC
subscribers it serves: one group-less consumer with a manual assignment, fanned out locally
by `LocalFanout`. Kafka keeps messages, so "only what is published after subscribing" is
made exact with offsets: a topic a subscription adds is assigned at its end offsets, read
before `subscribe` returns.

Patterns: Kafka has no server-side glob, so a pattern subscription reads every topic under
the connection's prefix and `LocalFanout` matches each message's channel exactly. Topics
seen at the last listing are read from their end; topics that appear later (created by this
sidecar's own publish, at once, or found by the refresh every `pattern_refresh`) are read
from their beginning: they were created after every subscription then open had started.

Changing the assignment and fetching take turns under one lock; positions of partitions
already read are kept across a reassignment, so nothing is skipped or read twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sidecar.backends.pubsub._fanout import LocalFanout
from sidecar.connections.kafka import KafkaConnection, TopicNames

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

__all__ = ["ALL_TOPICS", "PlainReader", "record_metadata", "stop_consumer"]

_log = logging.getLogger("sidecar.pubsub.kafka")

ALL_TOPICS = ""
"""The wire key of a pattern: every topic under the prefix (never a topic name)."""
_FETCH_MS = 100
_FETCH_RECORDS = 1000


async def stop_consumer(consumer: AIOKafkaConsumer, wait: float = 2.0) -> None:
    """Stop a consumer, waiting at most `wait` seconds.

    `stop` waits for the fetch in flight, and a broker may hold a fetch on an empty
    partition until the request timeout (Tansu does); past `wait` the stop finishes in
    the background instead of holding up a close.
    """
    task = asyncio.ensure_future(consumer.stop())
    done, _ = await asyncio.wait({task}, timeout=wait)
    if not done:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    elif task.exception() is not None:
        _log.info("stopping a kafka consumer: %r", task.exception())


def record_metadata(headers: Iterable[tuple[str, bytes]]) -> Mapping[str, str]:
    """The read-only metadata of a record's headers (undecodable bytes replaced)."""
    return MappingProxyType({key: value.decode(errors="replace") for key, value in headers})


class PlainReader:
    """The shared consumer of plain topics; see the module docstring.

    Args:
        connection: the Kafka connection (its consumer options).
        names: the service's topic names.
        fanout: the local subscriptions, by channel and glob.
        clock: monotonic seconds, for the pattern refresh.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        names: TopicNames,
        fanout: LocalFanout,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connection = connection
        self._names = names
        self._fanout = fanout
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._assigned: set[str] = set()
        self._seen: set[str] | None = None  # topics under the prefix at the last listing
        self._next_refresh = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def assigned(self) -> frozenset[str]:
        """The topics read now."""
        return frozenset(self._assigned)

    def is_new(self, topic: str) -> bool:
        """Whether pattern subscriptions exist and have not seen `topic` yet."""
        return self._seen is not None and topic not in self._seen

    async def update(self) -> None:
        """Read exactly what the fanout's wire keys need: exact topics from their end, and
        with patterns every topic under the prefix (listing them now)."""
        wanted = {key for key in self._fanout.wire_keys if key != ALL_TOPICS}
        for topic in wanted - self._assigned:
            await self._connection.ensure_topic(topic)
        patterns = ALL_TOPICS in self._fanout.wire_keys
        if patterns:
            listed = await self._listed()
            wanted |= listed
            self._seen = (self._seen or set()) | listed
            self._next_refresh = self._clock() + self._connection.endpoint.pattern_refresh
        else:
            self._seen = None
        await self._reassign(wanted, from_start=set())

    async def adopt(self, topic: str) -> None:
        """Read a topic new to the pattern subscriptions from its beginning."""
        if self._seen is None or topic in self._seen:
            return
        self._seen.add(topic)
        await self._reassign(self._assigned | {topic}, from_start={topic})

    async def sync(self) -> None:
        """Wait until every message already in the assigned topics has been fanned out."""
        async with self._lock:
            consumer = self._consumer
            if consumer is None or not consumer.assignment():
                return
            ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            async with self._lock:
                behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop reading and close the consumer.

        The consumer stops first: aiokafka's `getmany` may swallow the cancellation of the
        task waiting in it, but it always ends once the consumer is stopped.
        """
        self._stopping = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_consumer(consumer)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # A request without a deadline of its own (offsets of a topic being deleted) may
            # hold the task; it is abandoned rather than awaited.
            await asyncio.wait({task}, timeout=1.0)

    async def _listed(self) -> set[str]:
        prefix = self._names.prefix
        return {
            topic
            for topic in await self._connection.list_topics()
            if topic.startswith(prefix) and self._names.channel(topic) is not None
        }

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(
                **self._connection.consumer_options(), group_id=None, auto_offset_reset="latest"
            )
            with self._connection.errors:
                await consumer.start()
            self._consumer = consumer
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kafka-plain-reader")
        return self._consumer

    async def _reassign(self, topics: set[str], *, from_start: set[str]) -> None:
        async with self._lock:
            consumer = await self._started()
            kept: dict[TopicPartition, int] = {}
            for tp in consumer.assignment():
                if tp.topic in topics:
                    kept[tp] = await consumer.position(tp)
            partitions = await self._partitions(topics)
            with self._connection.errors:
                consumer.assign(partitions)
                fresh = [tp for tp in partitions if tp not in kept]
                ends = await consumer.end_offsets(fresh) if fresh else {}
                starts = (
                    await consumer.beginning_offsets([tp for tp in fresh if tp.topic in from_start])
                    if from_start
                    else {}
                )
            for tp in partitions:
                consumer.seek(tp, kept[tp] if tp in kept else starts.get(tp, ends.get(tp, 0)))
            self._assigned = set(topics)
            self._wake.set()

    async def _partitions(self, topics: set[str]) -> list[TopicPartition]:
        from aiokafka import TopicPartition

        return [
            TopicPartition(topic, partition)
            for topic in sorted(topics)
            for partition in await self._connection.partitions(topic)
        ]

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the link comes back by itself; keep reading
                _log.warning("kafka plain reader: %r", exc)
                await asyncio.sleep(self._connection.endpoint.reconnect_backoff)

    async def _step(self) -> None:
        if self._seen is not None and self._clock() >= self._next_refresh:
            self._next_refresh = self._clock() + self._connection.endpoint.pattern_refresh
            for topic in sorted(await self._listed() - self._seen):
                await self.adopt(topic)
        if not self._assigned:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            return
        async with self._lock:
            consumer = self._consumer
            if consumer is None:
                return
            batches = await consumer.getmany(timeout_ms=_FETCH_MS, max_records=_FETCH_RECORDS)
            # Kafka orders each partition only; within one fetch, publish time orders the
            # topics' messages among themselves as well as it can.
            merged = sorted(
                (record for records in batches.values() for record in records),
                key=lambda record: record.timestamp,
            )
            for record in merged:
                self._deliver(record)

    def _deliver(self, record: ConsumerRecord[Any, Any]) -> None:
        channel = self._names.channel(record.topic)
        if channel is None:
            return
        self._fanout.dispatch(
            channel,
            record.value or b"",
            record_metadata(record.headers),
            record.timestamp / 1000,
        )
