"""`KafkaReliable`: reliable topics (`ReliablePubSub`) on Kafka consumer groups.

- A topic is the Kafka topic of the channel (`connections.kafka.topic_name`); a message id
  is `<partition>-<offset>`.
- A consumer group is a Kafka group: each `consume` opens one aiokafka group consumer (named
  by `client_id`), and Kafka shares the topics' partitions among the group's consumers.
- Acknowledgement: Kafka commits one offset per partition, meaning "everything before it is
  done". So each consumer keeps, per partition it owns, the messages it delivered and that
  are still unacknowledged, and commits the lowest of them (or, with none, the offset after
  the last delivered message): the committed offset never passes an unacknowledged
  message. An acknowledgement commits before `acknowledge` returns.
- Visibility timeout: a message not acknowledged in time is delivered again from the copy
  the consumer holds (Kafka has no per-message redelivery), with `delivery_count` + 1.
  After a rebalance, or a consumer or sidecar restart, the new owner of the partition reads
  again from the committed offset, so nothing unacknowledged is lost; its delivery counts
  start over at 1 (they live in the consumer's memory, not in Kafka).
- Dead letters: a message whose visibility timeout passes after `max_deliveries` deliveries
  is appended to the topic `<topic>.dlq` (one partition; record headers say where it came
  from) and counts as acknowledged. `replay_dead_letters` publishes it again and appends a
  marker record to the dead letters naming it, since Kafka cannot delete single records;
  `read_dead_letters` skips letters with a marker. Reading scans the dead-letter topic from
  its start, at most `MAX_DEAD_LETTER_SCAN` records.
- Per-key order (the `ordering_keys` feature): a message published with an ordering key is
  the Kafka record key, so all of one key's messages land in one partition, which one
  member at a time reads in order; without a key the producer spreads messages over the
  partitions. Within one sidecar, consumers of a group get a partition's messages as they
  have room, so a key's order holds per partition, not per gRPC consumer, when several
  local consumers share a group.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from sidecar.backends.pubsub._kafka_group import (
    DeliveryCounts,
    GroupConsumer,
    GroupMember,
    message_id,
    parse_id,
)
from sidecar.backends.pubsub._kafka_reader import record_metadata, stop_consumer
from sidecar.backends.pubsub.reliable import (
    DeadLetter,
    ReliableMessage,
    ReliablePubSub,
    ReliableSubscription,
    Replayed,
    ReplayOutcome,
)
from sidecar.connections.kafka import KafkaConnection
from sidecar.errors import Unavailable

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord

__all__ = ["MAX_DEAD_LETTER_SCAN", "KafkaReliable"]

_log = logging.getLogger("sidecar.pubsub.kafka")

MAX_DEAD_LETTER_SCAN: Final = 100_000
"""Dead-letter records read at most per read or replay (older ones beyond are not seen)."""
DLQ_SUFFIX: Final = ".dlq"
_H = "sidecar-dlq-"
_REPLAYED = _H + "replayed"
_MAX_WAIT = 0.2


def _headers(metadata: Mapping[str, str] | None) -> list[tuple[str, bytes]]:
    return [(key, value.encode()) for key, value in (metadata or {}).items()]


class KafkaReliable(ReliablePubSub):
    """Reliable topics on one Kafka connection; see the module docstring.

    Args:
        connection: the Kafka connection (shared; closed by its owner).
        name: the service name, reported as `target` in errors.
        key_prefix: the service's prefix of topic names (after the connection's).
        visibility_timeout: seconds a delivered message may stay unacknowledged.
        max_deliveries: deliveries after which an unacknowledged message is dead-lettered.
        clock: monotonic seconds (visibility deadlines); clock_wall: epoch seconds.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        *,
        name: str,
        key_prefix: str = "",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        clock: Callable[[], float] = time.monotonic,
        clock_wall: Callable[[], float] = time.time,
    ) -> None:
        if visibility_timeout <= 0 or max_deliveries < 1:
            raise ValueError("visibility_timeout and max_deliveries must be > 0")
        self.connection = connection
        self.names = connection.names(key_prefix)
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.max_deliveries = max_deliveries
        self.clock = clock
        self.clock_wall = clock_wall
        self.dead_lettered = 0
        self._members: dict[tuple[str, tuple[str, ...]], GroupMember] = {}
        self._counts = DeliveryCounts()
        self._closed = False

    async def publish_reliable(
        self,
        topic: str,
        payload: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        ordering_key: str | None = None,
    ) -> str:
        """Append to the topic; a message with an `ordering_key` goes to the key's partition
        (Kafka's hash of the key), so one key's messages are delivered in publish order."""
        self._check_open()
        name = self.names.topic(topic)
        await self.connection.ensure_topic(name)
        producer = await self.connection.producer()
        with self.connection.errors:
            sent = await producer.send_and_wait(
                name,
                value=bytes(payload),
                key=ordering_key.encode() if ordering_key else None,
                headers=_headers(metadata),
                timestamp_ms=round(self.clock_wall() * 1000),
            )
        return message_id(sent.partition, sent.offset)

    async def consume(
        self, topics: Sequence[str], group: str, consumer: str | None, *, max_in_flight: int
    ) -> ReliableSubscription:
        self._check_open()
        if not topics or not group:
            raise ValueError("consume needs at least one topic and a group")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        names = {self.names.topic(topic): topic for topic in dict.fromkeys(topics)}
        for name in names:
            await self.connection.ensure_topic(name)
        key = (group, tuple(sorted(names)))
        member = self._members.get(key)
        if member is None:
            member = GroupMember(
                self.connection,
                group,
                names,
                visibility_timeout=self.visibility_timeout,
                max_deliveries=self.max_deliveries,
                counts=self._counts,
                dead_letter=self.dead_letter,
                clock=self.clock,
                on_empty=self._forget,
            )
            member.start()
            self._members[key] = member
        return member.join(consumer or f"sidecar-{uuid.uuid4().hex[:16]}", max_in_flight)

    async def acknowledge(self, topic: str, group: str, message_ids: Sequence[str]) -> int:
        self._check_open()
        name = self.names.topic(topic)
        settled = 0
        for (member_group, names), member in list(self._members.items()):
            if member_group == group and name in names:
                settled += await member.settle(name, message_ids)
        return settled

    async def dead_letter(
        self, consumer: GroupConsumer | None, message: ReliableMessage, group: str
    ) -> None:
        """Append a message given up on to its topic's dead letters."""
        dlq = self.names.topic(message.topic + DLQ_SUFFIX)
        await self.connection.ensure_topic(dlq, 1)
        headers = [
            *_headers(message.metadata),
            (_H + "topic", message.topic.encode()),
            (_H + "id", message.message_id.encode()),
            (_H + "deliveries", str(message.delivery_count).encode()),
            (_H + "group", group.encode()),
            (_H + "consumer", (consumer.consumer if consumer is not None else "").encode()),
            (_H + "published-at", repr(message.published_at).encode()),
        ]
        producer = await self.connection.producer()
        with self.connection.errors:
            await producer.send_and_wait(
                dlq,
                value=message.payload,
                headers=headers,
                timestamp_ms=round(self.clock_wall() * 1000),
            )
        self.dead_lettered += 1

    async def read_dead_letters(
        self, topic: str, *, after: str | None, count: int
    ) -> list[DeadLetter]:
        self._check_open()
        letters = await self._dead_letters(topic)
        start = parse_id(after) if after else None
        if start is not None:
            letters = [
                letter
                for letter in letters
                if parse_id(letter.dead_letter_id) > start  # type: ignore[operator]
            ]
        return letters[:count]

    async def replay_dead_letters(
        self, topic: str, dead_letter_ids: Sequence[str] | None, *, limit: int
    ) -> ReplayOutcome:
        self._check_open()
        letters = await self._dead_letters(topic)
        by_id = {letter.dead_letter_id: letter for letter in letters}
        if dead_letter_ids is None:
            chosen, not_found = letters[:limit], []
        else:
            named = list(dict.fromkeys(dead_letter_ids))
            chosen = [by_id[i] for i in named if i in by_id]
            not_found = [i for i in named if i not in by_id]
        dlq = self.names.topic(topic + DLQ_SUFFIX)
        producer = await self.connection.producer()
        replayed: list[Replayed] = []
        for letter in chosen:
            new_id = await self.publish_reliable(topic, letter.payload, letter.metadata)
            with self.connection.errors:
                await producer.send_and_wait(
                    dlq, value=b"", headers=[(_REPLAYED, letter.dead_letter_id.encode())]
                )
            replayed.append(Replayed(letter.dead_letter_id, new_id))
        return ReplayOutcome(tuple(replayed), tuple(not_found), len(letters) - len(replayed))

    async def _dead_letters(self, topic: str) -> list[DeadLetter]:
        """Every dead letter of `topic` not replayed yet, oldest first."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        dlq = self.names.topic(topic + DLQ_SUFFIX)
        await self.connection.ensure_topic(dlq, 1)
        reader = AIOKafkaConsumer(
            **self.connection.consumer_options(), group_id=None, auto_offset_reset="earliest"
        )
        letters: dict[str, DeadLetter] = {}
        with self.connection.errors:
            await reader.start()
            try:
                partition = TopicPartition(dlq, 0)
                reader.assign([partition])
                end = (await reader.end_offsets([partition]))[partition]
                start = (await reader.beginning_offsets([partition]))[partition]
                reader.seek(partition, max(start, end - MAX_DEAD_LETTER_SCAN))
                while await reader.position(partition) < end:
                    batch = await reader.getmany(partition, timeout_ms=500, max_records=1000)
                    for record in batch.get(partition, ()):
                        self._read_letter(record, letters)
            finally:
                await stop_consumer(reader)
        return list(letters.values())

    def _read_letter(
        self, record: ConsumerRecord[Any, Any], letters: dict[str, DeadLetter]
    ) -> None:
        headers = dict(record.headers)
        if _REPLAYED in headers:
            letters.pop(headers[_REPLAYED].decode(errors="replace"), None)
            return
        own = {
            key[len(_H) :]: value.decode(errors="replace")
            for key, value in headers.items()
            if key.startswith(_H)
        }
        metadata = record_metadata((k, v) for k, v in record.headers if not k.startswith(_H))
        dead_letter_id = message_id(record.partition, record.offset)
        try:
            letters[dead_letter_id] = DeadLetter(
                dead_letter_id=dead_letter_id,
                topic=own.get("topic", ""),
                message_id=own.get("id", ""),
                payload=record.value or b"",
                metadata=metadata,
                published_at=float(own.get("published-at", "0")),
                delivery_count=int(own.get("deliveries", "0")),
                group=own.get("group", ""),
                consumer=own.get("consumer", ""),
                dead_lettered_at=record.timestamp / 1000,
            )
        except ValueError:  # not written by a sidecar: skipped
            return

    def _forget(self, member: GroupMember) -> None:
        for key, known in list(self._members.items()):
            if known is member:
                del self._members[key]

    def dead_lettered_total(self) -> int:
        """Messages this backend has moved to the dead letters since it was built."""
        return self.dead_lettered

    def consumer_count(self) -> int:
        """Group consumers open through this backend."""
        return sum(len(member.consumers) for member in self._members.values())

    async def close(self) -> None:
        """Close every group consumer (what they hold unacknowledged is read again later)."""
        if self._closed:
            return
        self._closed = True
        for member in list(self._members.values()):
            await member.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                "the reliable-topic backend is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self.name},
            )
