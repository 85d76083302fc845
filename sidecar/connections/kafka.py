"""Kafka connections: one configured Kafka-protocol cluster, the aiokafka producer every
service naming it shares, an admin client for topics, and the settings of the consumers the
backends open on it.

aiokafka is chosen over confluent-kafka: it is asyncio-native (no thread-pool bridge; the
confluent `aio` wrapper hung against Tansu in our trials), commits explicit per-partition
offsets, has rebalance listeners and pause/resume, and publishes ~150k msg/s pipelined on
Tansu, far above what the sidecar's gRPC path delivers.

The producer connects on first use with `acks=all`: a publish returns once every in-sync
replica has the message. aiokafka reconnects by itself (every `reconnect_backoff`) when a
broker goes away; requests in flight meanwhile fail and are mapped to Unavailable.

Topic names: a channel becomes `topic_prefix` + its name, where every character Kafka does
not allow in a topic name (anything but letters, digits, '.' and '-') and '_' itself is
written `_XX` per UTF-8 byte (hex), so the mapping is one-to-one and reversible; names over
249 characters are refused with INVALID_ARGUMENT.

    connection = KafkaConnection("events", endpoint, timeouts)
    producer = await connection.producer()
    await connection.ensure_topic("app.orders")
    await connection.close()
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sidecar.config import ConnectionPoolConfig, ServiceBase, TimeoutsConfig
from sidecar.config.kafka import KafkaEndpoint
from sidecar.connections._mapped_errors import MappedErrors
from sidecar.connections._tls import client_ssl_context
from sidecar.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    SidecarError,
    Unavailable,
)

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

__all__ = [
    "MAX_TOPIC_NAME",
    "KafkaConnection",
    "TopicNames",
    "channel_of",
    "kafka_error",
    "open_connection",
    "topic_name",
]

MAX_TOPIC_NAME: Final = 249
"""Kafka's limit on a topic name's length."""
_KEPT = re.compile(rb"[A-Za-z0-9.\-]")
_ESCAPE = re.compile(r"_([0-9A-F]{2})")
_TOPIC_ALREADY_EXISTS: Final = 36
_UNKNOWN_TOPIC: Final = 3


def open_connection(
    name: str,
    settings: KafkaEndpoint | ServiceBase,
    pool: ConnectionPoolConfig,
    timeouts: TimeoutsConfig,
) -> KafkaConnection:
    """The kafka connection of a `connections:` entry, or of a pub/sub service without one
    (its own, with the endpoint's defaults: 127.0.0.1:9092). No I/O; `pool` does not apply
    (aiokafka keeps one socket per broker)."""
    if not isinstance(settings, KafkaEndpoint):
        settings = KafkaEndpoint()
    return KafkaConnection(name, settings, timeouts)


def _encode(text: str) -> str:
    return "".join(
        chr(byte) if _KEPT.match(bytes((byte,))) else f"_{byte:02X}" for byte in text.encode()
    )


def topic_name(prefix: str, channel: str) -> str:
    """The Kafka topic of `channel` (see the module docstring).

    Raises:
        InvalidArgument: the channel is empty or its topic name would be too long.
    """
    if not channel:
        raise InvalidArgument("a Kafka channel needs a name", reason="INVALID_REQUEST")
    name = prefix + _encode(channel)
    if len(name) > MAX_TOPIC_NAME or name in (".", ".."):
        raise InvalidArgument(
            f"channel {channel[:64]!r} makes a Kafka topic name over {MAX_TOPIC_NAME} "
            "characters (prefix and escapes included)",
            reason="INVALID_REQUEST",
        )
    return name


def channel_of(prefix: str, topic: str) -> str | None:
    """The channel whose topic is `topic`, or None for a topic outside `prefix`."""
    if not topic.startswith(prefix):
        return None
    raw = _ESCAPE.sub(lambda m: "\x00" + m.group(1), topic[len(prefix) :])
    data = bytearray()
    parts = raw.split("\x00")
    data += parts[0].encode()
    for part in parts[1:]:
        data.append(int(part[:2], 16))
        data += part[2:].encode()
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def kafka_error(error: BaseException, target: str) -> SidecarError | None:
    """The sidecar error for an aiokafka exception (None: not the library's)."""
    from aiokafka import errors

    metadata = {"target": target}
    text = f"Kafka ({target}): {str(error) or type(error).__name__}"
    if isinstance(
        error, errors.TopicAuthorizationFailedError | errors.GroupAuthorizationFailedError
    ):
        return PermissionDenied(text, reason="UPSTREAM_AUTH_FAILED", metadata=metadata)
    if isinstance(error, errors.MessageSizeTooLargeError | errors.InvalidTopicError):
        return InvalidArgument(text, reason="INVALID_REQUEST", metadata=metadata)
    if isinstance(error, errors.KafkaError):
        if getattr(error, "retriable", False) or isinstance(
            error, errors.KafkaConnectionError | errors.KafkaTimeoutError
        ):
            return Unavailable(text, reason="UPSTREAM_UNAVAILABLE", metadata=metadata)
        return FailedPrecondition(text, reason="UPSTREAM_REJECTED", metadata=metadata)
    if isinstance(error, TimeoutError | OSError):
        return Unavailable(text, reason="UPSTREAM_UNAVAILABLE", metadata=metadata)
    return None


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topic names of one service: the connection's `topic_prefix`, then the service's
    `key_prefix` (escaped like a channel), then the channel."""

    prefix: str

    def topic(self, channel: str) -> str:
        """The Kafka topic of a channel."""
        return topic_name(self.prefix, channel)

    def channel(self, topic: str) -> str | None:
        """The channel of a Kafka topic (None: not one of this service's)."""
        return channel_of(self.prefix, topic)


class KafkaConnection:
    """The producer and admin client of one Kafka cluster; see the module docstring.

    Args:
        name: the connection's name (errors report it as `target`).
        endpoint: where the brokers are, how topics are made, consumer timings.
        timeouts: `connect` bounds connecting; `request` each broker request.
    """

    type = "kafka"
    probed = True

    def __init__(self, name: str, endpoint: KafkaEndpoint, timeouts: TimeoutsConfig) -> None:
        self.name = name
        self.endpoint = endpoint
        self.errors = MappedErrors(name, kafka_error)
        self._request_ms = max(1000, round(timeouts.request * 1000))
        self._ssl = client_ssl_context(endpoint.tls)
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._known_topics: set[str] = set()
        self._partition_numbers: dict[str, list[int]] = {}
        self._opening = asyncio.Lock()
        self._closed = False

    def names(self, key_prefix: str = "") -> TopicNames:
        """The topic names of a service on this connection with that `key_prefix`."""
        return TopicNames(self.endpoint.topic_prefix + _encode(key_prefix))

    def client_options(self) -> dict[str, Any]:
        """What every aiokafka client on this connection is made with."""
        endpoint = self.endpoint
        options: dict[str, Any] = {
            "bootstrap_servers": list(endpoint.bootstrap_servers),
            "client_id": endpoint.client_id,
            "request_timeout_ms": self._request_ms,
            "retry_backoff_ms": round(endpoint.reconnect_backoff * 1000),
            "metadata_max_age_ms": 60_000,
        }
        if self._ssl is not None:
            options.update(security_protocol="SSL", ssl_context=self._ssl)
        return options

    def consumer_options(self) -> dict[str, Any]:
        """Options of a consumer (group or not) on this connection; commits are manual."""
        endpoint = self.endpoint
        return {
            **self.client_options(),
            "enable_auto_commit": False,
            "session_timeout_ms": round(endpoint.session_timeout * 1000),
            "heartbeat_interval_ms": round(endpoint.heartbeat_interval * 1000),
            "rebalance_timeout_ms": round(endpoint.session_timeout * 1000),
            "fetch_max_wait_ms": 100,
        }

    async def producer(self) -> AIOKafkaProducer:
        """The shared producer (acks=all), started on first use.

        Raises:
            Unavailable: closed, or no broker can be reached now.
        """
        self._check_open()
        if self._producer is not None:
            return self._producer
        async with self._opening:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(**self.client_options(), acks="all", linger_ms=0)
                with self.errors:
                    await producer.start()
                self._producer = producer
            return self._producer

    async def admin(self) -> AIOKafkaAdminClient:
        """The admin client, started on first use."""
        self._check_open()
        if self._admin is not None:
            return self._admin
        async with self._opening:
            if self._admin is None:
                from aiokafka.admin import AIOKafkaAdminClient

                admin = AIOKafkaAdminClient(**self.client_options())
                with self.errors:
                    await admin.start()
                self._admin = admin
            return self._admin

    async def ensure_topic(self, topic: str, partitions: int | None = None) -> bool:
        """Create `topic` unless it is known to exist; True if this call created it."""
        if topic in self._known_topics:
            return False
        from aiokafka.admin import NewTopic

        admin = await self.admin()
        with self.errors:
            response = await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        partitions or self.endpoint.topic_partitions,
                        self.endpoint.replication_factor,
                    )
                ],
                timeout_ms=self._request_ms,
            )
        created = True
        for entry in response.topic_errors:
            code = entry[1]
            if code == _TOPIC_ALREADY_EXISTS:
                created = False
            elif code:
                raise FailedPrecondition(
                    f"Kafka ({self.name}): creating topic {topic!r} failed with error {code}",
                    reason="UPSTREAM_REJECTED",
                    metadata={"target": self.name},
                )
        self._known_topics.add(topic)
        return created

    async def partitions(self, topic: str) -> list[int]:
        """The partition numbers of an existing topic."""
        if topic in self._partition_numbers:
            return self._partition_numbers[topic]
        admin = await self.admin()
        with self.errors:
            [described] = await admin.describe_topics([topic])
        numbers = sorted(entry["partition"] for entry in described.get("partitions", ()))
        if described.get("error_code") or not numbers:
            raise Unavailable(
                f"Kafka ({self.name}): topic {topic!r} has no partitions yet",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self.name},
            )
        self._partition_numbers[topic] = numbers
        return numbers

    async def list_topics(self) -> list[str]:
        """Every topic of the cluster."""
        admin = await self.admin()
        with self.errors:
            return list(await admin.list_topics())

    async def delete_topics(self, topics: Iterable[str]) -> None:
        """Delete topics (missing ones are ignored); for tests and tooling."""
        names = list(topics)
        if not names:
            return
        admin = await self.admin()
        with self.errors:
            await admin.delete_topics(names, timeout_ms=self._request_ms)
        self._known_topics.difference_update(names)
        for name in names:
            self._partition_numbers.pop(name, None)

    def forget_topic(self, topic: str) -> None:
        """Forget that `topic` exists (it was deleted behind our back)."""
        self._known_topics.discard(topic)
        self._partition_numbers.pop(topic, None)

    async def ping(self) -> None:
        """One metadata round trip to the cluster.

        Raises:
            Unavailable: no broker answers.
        """
        admin = await self.admin()
        with self.errors:
            await admin.describe_cluster()

    async def close(self) -> None:
        """Stop the producer (flushing what it holds) and the admin client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        try:
            if producer is not None:
                await producer.stop()
        finally:
            if admin is not None:
                await admin.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                f"the kafka connection {self.name} is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self.name},
            )
