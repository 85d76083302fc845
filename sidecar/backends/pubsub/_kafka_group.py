"""`GroupMember` and `GroupConsumer`: how one sidecar takes part in a Kafka consumer group.

Kafka shares a group's work by partition: each partition belongs to one member. A sidecar
joins a group once per set of topics (one `GroupMember`, one aiokafka group consumer) however
many gRPC consumers of that group it serves, and hands each fetched message to whichever of
its local `GroupConsumer`s has room (fewest in flight first): so consumers of one group in
one sidecar share messages one by one, and sidecars share them by partition.

The member keeps, per owned partition, every message it fetched and that is not yet
acknowledged (`_Partition.pending`), and commits the lowest of them (or, with none, the
offset after the last fetched): the committed offset never passes an unacknowledged
message. A delivered message not acknowledged within the visibility timeout goes again
(from the member's copy) to a local consumer with room, the same or another; one whose
holder closed waits for its timeout too. After `max_deliveries` deliveries it is
dead-lettered instead, and counts as acknowledged.

When its last local consumer leaves, the member lingers one session timeout before it
leaves the group: a consumer that comes back meanwhile (a client reconnecting) finds its
partitions and its unacknowledged messages still here, with no rebalance (which takes
Tansu 11 s), and gets them again after their visibility timeout.

Delivery counts live in the backend (`DeliveryCounts`), not in the member, so a consumer
that closes and comes back in the same sidecar continues the count; after a rebalance moves
a partition to another sidecar, or a sidecar restarts, counting starts over at 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from sidecar.backends.pubsub._kafka_reader import record_metadata, stop_consumer
from sidecar.backends.pubsub.reliable import ReliableMessage, ReliableSubscription
from sidecar.connections.kafka import KafkaConnection
from sidecar.errors import Unavailable

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

__all__ = ["DeliveryCounts", "GroupConsumer", "GroupMember", "message_id", "parse_id"]

_log = logging.getLogger("sidecar.pubsub.kafka")

_MAX_WAIT: Final = 0.2
MAX_COUNTED: Final = 100_000
"""Delivery counts kept per backend at most (the oldest are forgotten beyond)."""

DeadLetterer = Callable[["GroupConsumer | None", ReliableMessage, str], Awaitable[None]]
"""(last holder, message, group) -> appended to the dead letters."""


def message_id(partition: int, offset: int) -> str:
    """The id of the message at `offset` of `partition`."""
    return f"{partition}-{offset}"


def parse_id(value: str) -> tuple[int, int] | None:
    """(partition, offset) of a message id, or None if it is not one."""
    partition, _, offset = value.partition("-")
    if not (partition.isdigit() and offset.isdigit()):
        return None
    return int(partition), int(offset)


class DeliveryCounts:
    """Deliveries so far of unacknowledged messages, by (group, topic, partition, offset)."""

    def __init__(self, limit: int = MAX_COUNTED) -> None:
        self._counts: OrderedDict[tuple[str, str, int, int], int] = OrderedDict()
        self._limit = limit

    def next(self, key: tuple[str, str, int, int]) -> int:
        """Count one more delivery; return the count."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self._limit:
            self._counts.popitem(last=False)
        return count

    def forget(self, key: tuple[str, str, int, int]) -> None:
        self._counts.pop(key, None)


@dataclass(slots=True)
class _Held:
    message: ReliableMessage
    deadline: float
    holder: GroupConsumer | None


@dataclass(slots=True)
class _Partition:
    """What the member fetched of one partition it owns and has not seen acknowledged."""

    pending: dict[int, _Held] = field(default_factory=dict)  # by offset, ascending
    next_offset: int | None = None
    committed: int | None = None

    def floor(self) -> int | None:
        """The offset that may be committed: nothing unacknowledged lies before it."""
        if self.pending:
            return min(self.pending)
        return self.next_offset


class GroupConsumer(ReliableSubscription):
    """One gRPC consumer of a group: the messages its member hands it, at most
    `max_in_flight` unacknowledged."""

    def __init__(self, member: GroupMember, consumer: str, max_in_flight: int) -> None:
        self.member = member
        self._name = consumer
        self.max_in_flight = max_in_flight
        self.in_flight: set[tuple[TopicPartition, int]] = set()
        self._queue: deque[ReliableMessage] = deque()
        self._wake = asyncio.Event()
        self.closed = False

    @property
    def consumer(self) -> str:
        return self._name

    @property
    def room(self) -> int:
        return 0 if self.closed else self.max_in_flight - len(self.in_flight)

    def hand(self, tp: TopicPartition, offset: int, message: ReliableMessage) -> None:
        self.in_flight.add((tp, offset))
        self._queue.append(message)
        self._wake.set()

    def __aiter__(self) -> AsyncIterator[ReliableMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[ReliableMessage]:
        try:
            while True:
                if self._queue:
                    yield self._queue.popleft()
                elif self.closed:
                    return
                else:
                    self._wake.clear()
                    await self._wake.wait()
        finally:
            if not self.closed:
                task = asyncio.ensure_future(self.close())
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def close(self) -> None:
        """Leave; what it holds unacknowledged goes to others after its visibility timeout."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._wake.set()
        await self.member.leave(self)


class GroupMember:
    """This sidecar's member of one Kafka group on one set of topics; see the docstring.

    Args:
        connection: the Kafka connection.
        group: the group's name.
        topics: Kafka topic name -> the topic's name in the sidecar.
        visibility_timeout, max_deliveries: as configured.
        counts: the backend's delivery counts.
        dead_letter: appends a message to its topic's dead letters.
        clock: monotonic seconds.
        on_empty: called once the last local consumer left and the member closed.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        group: str,
        topics: dict[str, str],
        *,
        visibility_timeout: float,
        max_deliveries: int,
        counts: DeliveryCounts,
        dead_letter: DeadLetterer,
        clock: Callable[[], float],
        on_empty: Callable[[GroupMember], None],
    ) -> None:
        self.connection = connection
        self.group = group
        self.topics = topics
        self._visibility = visibility_timeout
        self._max_deliveries = max_deliveries
        self._counts = counts
        self._dead_letter = dead_letter
        self._clock = clock
        self._on_empty = on_empty
        self.consumers: dict[GroupConsumer, None] = {}
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._kafka: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._linger: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self) -> None:
        """Start joining the group, in the background.

        Joining can take a while: a broker delays a new group's first join (Tansu: 3 s),
        and after a member died it waits for its session to time out before the others get
        its partitions. A new group reads from the oldest message, so nothing published
        meanwhile is missed.
        """
        self._task = asyncio.create_task(self._run(), name=f"kafka-group-{self.group}")

    def _new_consumer(self) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        member = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await member._commit([tp for tp in revoked if tp in member._partitions])
                for tp in revoked:
                    member._drop(tp)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                for tp in assigned:
                    member._partitions.setdefault(tp, _Partition())

        kafka = AIOKafkaConsumer(
            **self.connection.consumer_options(),
            group_id=self.group,
            auto_offset_reset="earliest",
        )
        kafka.subscribe(list(self.topics), listener=Listener())
        return kafka

    def join(self, consumer: str, max_in_flight: int) -> GroupConsumer:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        subscription = GroupConsumer(self, consumer, max_in_flight)
        self.consumers[subscription] = None
        self._wake.set()
        return subscription

    async def leave(self, consumer: GroupConsumer) -> None:
        self.consumers.pop(consumer, None)
        for state in self._partitions.values():
            for held in state.pending.values():
                if held.holder is consumer:
                    held.holder = None
        if not self.consumers and not self._closed and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(
                self.connection.endpoint.session_timeout, self._close_lingering
            )

    def _close_lingering(self) -> None:
        self._linger = None
        if not self.consumers:
            task = asyncio.ensure_future(self.close())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def settle(self, topic: str, ids: Sequence[str]) -> int:
        """Forget acknowledged messages and commit what that allows; how many were held."""
        from aiokafka import TopicPartition

        touched: dict[TopicPartition, None] = {}
        settled = 0
        for value in ids:
            parsed = parse_id(value)
            if parsed is None:
                continue
            tp = TopicPartition(topic, parsed[0])
            state = self._partitions.get(tp)
            held = state.pending.get(parsed[1]) if state is not None else None
            if (
                state is None
                or held is None
                or (held.holder is None and held.message.delivery_count == 0)
            ):
                continue
            del state.pending[parsed[1]]
            self._release(tp, parsed[1], held)
            settled += 1
            touched[tp] = None
        if touched:
            self._wake.set()
            await self._commit(list(touched))
        return settled

    async def close(self) -> None:
        """Commit what is settled, leave the group; local consumers end."""
        if self._closed:
            return
        self._closed = True
        if self._linger is not None:
            self._linger.cancel()
        for consumer in list(self.consumers):
            consumer.closed = True
            consumer._wake.set()
        self.consumers.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            await self._commit(list(self._partitions), kafka)
            await stop_consumer(kafka)  # leaves the group: the others take its partitions
        self._on_empty(self)

    def _key(self, tp: TopicPartition, offset: int) -> tuple[str, str, int, int]:
        return (self.group, tp.topic, tp.partition, offset)

    def _release(self, tp: TopicPartition, offset: int, held: _Held) -> None:
        if held.holder is not None:
            held.holder.in_flight.discard((tp, offset))
        self._counts.forget(self._key(tp, offset))

    def _drop(self, tp: TopicPartition) -> None:
        """A partition revoked: its messages are read again from the committed offset."""
        state = self._partitions.pop(tp, None)
        for offset, held in (state.pending if state is not None else {}).items():
            if held.holder is not None:
                held.holder.in_flight.discard((tp, offset))
        self._wake.set()

    def _pick(self) -> GroupConsumer | None:
        """The local consumer with the most room, if any has room."""
        best = max(self.consumers, key=lambda c: c.room, default=None)
        return best if best is not None and best.room > 0 else None

    def _give(self, tp: TopicPartition, offset: int, held: _Held) -> bool:
        consumer = self._pick()
        if consumer is None:
            return False
        count = self._counts.next(self._key(tp, offset))
        held.message = replace(held.message, delivery_count=count)
        held.deadline = self._clock() + self._visibility
        held.holder = consumer
        consumer.hand(tp, offset, held.message)
        return True

    async def _run(self) -> None:
        while not self._closed:
            try:
                if self._kafka is None:
                    kafka = self._new_consumer()
                    try:
                        with self.connection.errors:
                            await kafka.start()
                    except BaseException:
                        await stop_consumer(kafka)
                        raise
                    self._kafka = kafka
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the link comes back by itself; keep going
                _log.warning("kafka group %s: %r", self.group, exc)
                await asyncio.sleep(self.connection.endpoint.reconnect_backoff)

    async def _step(self) -> None:
        await self._overdue()
        kafka = self._kafka
        if kafka is None:
            return
        waiting = sum(
            1 for s in self._partitions.values() for h in s.pending.values() if h.holder is None
        )
        room = sum(c.room for c in self.consumers) - waiting
        wait = self._next_wait()
        if room <= 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            return
        with self.connection.errors:
            batches = await kafka.getmany(timeout_ms=max(1, round(wait * 1000)), max_records=room)
        for tp, records in batches.items():
            state = self._partitions.get(tp)
            if state is None:
                continue  # revoked meanwhile
            for record in records:
                held = _Held(self._message(record), 0.0, None)
                state.pending[record.offset] = held
                state.next_offset = record.offset + 1
                self._give(tp, record.offset, held)

    def _message(self, record: ConsumerRecord[Any, Any]) -> ReliableMessage:
        return ReliableMessage(
            topic=self.topics.get(record.topic, record.topic),
            message_id=message_id(record.partition, record.offset),
            payload=record.value or b"",
            metadata=record_metadata(record.headers),
            published_at=record.timestamp / 1000,
            delivery_count=0,
        )

    def _next_wait(self) -> float:
        deadlines = [
            h.deadline for s in self._partitions.values() for h in s.pending.values() if h.deadline
        ]
        if not deadlines:
            return _MAX_WAIT
        return min(max(min(deadlines) - self._clock(), 0.001), _MAX_WAIT)

    async def _overdue(self) -> None:
        """Hand out messages waiting for room; redeliver or dead-letter overdue ones."""
        now = self._clock()
        dead: dict[TopicPartition, None] = {}
        for tp, state in list(self._partitions.items()):
            for offset, held in list(state.pending.items()):
                never_given = held.message.delivery_count == 0
                if not never_given and held.deadline > now:
                    continue
                if not never_given and held.message.delivery_count >= self._max_deliveries:
                    await self._dead_letter(held.holder, held.message, self.group)
                    if state.pending.pop(offset, None) is not None:
                        self._release(tp, offset, held)
                    dead[tp] = None
                    continue
                if held.holder is not None:
                    held.holder.in_flight.discard((tp, offset))
                    held.holder = None
                if not self._give(tp, offset, held):
                    return
        if dead:
            await self._commit(list(dead))

    async def _commit(
        self, partitions: Sequence[TopicPartition], kafka: AIOKafkaConsumer | None = None
    ) -> None:
        """Commit each partition's floor where it moved; a commit refused by a rebalance is
        dropped (the new owner reads again from the last committed offset)."""
        kafka = kafka or self._kafka
        if kafka is None:
            return
        offsets: dict[TopicPartition, int] = {}
        for tp in partitions:
            state = self._partitions.get(tp)
            floor = state.floor() if state is not None else None
            if state is not None and floor is not None and floor != state.committed:
                offsets[tp] = floor
        if not offsets:
            return
        try:
            with self.connection.errors:
                await kafka.commit(offsets)
        except (Unavailable, Exception) as exc:
            _log.info("kafka commit for group %s not done: %r", self.group, exc)
            return
        for tp, offset in offsets.items():
            state = self._partitions.get(tp)
            if state is not None:
                state.committed = offset
