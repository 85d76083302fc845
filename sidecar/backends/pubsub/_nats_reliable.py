"""`NatsReliable`: reliable topics (`ReliablePubSub`) on NATS JetStream.

Layout on the server, for a topic `orders`, a group `billing` and `key_prefix` `app.`:

- stream `SC_app_orders_<hash>` holding the subject `app.orders` (one stream per topic,
  so each topic has its own limits and can be dropped alone; `max_msgs` is
  `max_stream_length`, oldest discarded). `publish_reliable` is a JetStream publish: it
  returns once the stream has stored the message (the PubAck), and the message id is
  `<publish ms>-<stream sequence>`;
- durable pull consumer `billing` (named after the group) on that stream, reading from
  the first message kept, so nothing published before the group existed is lost:
  explicit acks, `AckWait = visibility_timeout` (the server redelivers what is not acked in
  time, to any consumer of the group), no `MaxDeliver`;
- stream `SC_app_orders_dlq_<hash>` holding `app.orders.dlq`: the dead letters. A message
  delivered more than `max_deliveries` times is not handed to the app: the sidecar
  publishes it there (with `Sidecar-Dead-*` headers) and terminates it (`term`). The server
  does not count deliveries out itself (MaxDeliver) because a delivery can be lost on the
  way (a pull request that expired as it was answered, a dropped link) and still count:
  with a server-side limit, a message whose last allowed delivery was lost would stay
  undelivered for good, never reaching the dead letters. Dead-letter ids are
  `<dead ms>-<sequence in the dead-letter stream>`.

Each consumer fetches in batches no larger than its free `max_in_flight` slots. Closing it
naks what it holds, so those messages are delivered again at once rather than after the
ack wait. `acknowledge` acks (and waits for the server's confirmation of) what this
sidecar's open consumers hold; an id it does not hold counts 0 and the server redelivers
that message after its ack wait. The link dropping is survived: fetches fail while it is
down and start again once nats-py has reconnected; what was delivered and not acked comes
back after the ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import nats.errors as core_errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from sidecar.backends.pubsub.nats import PUBLISHED_AT, check_subject, split_headers
from sidecar.backends.pubsub.reliable import (
    DeadLetter,
    ReliableMessage,
    ReliableOptions,
    ReliablePubSub,
    ReliableSubscription,
    Replayed,
    ReplayOutcome,
)
from sidecar.connections.nats import NatsConnection
from sidecar.errors import InvalidArgument, NotFound, Unavailable

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = ["NatsReliable"]

_DEAD_TOPIC = "Sidecar-Dead-Topic"
_DEAD_ID = "Sidecar-Dead-Message-Id"
_DEAD_GROUP = "Sidecar-Dead-Group"
_DEAD_CONSUMER = "Sidecar-Dead-Consumer"
_DEAD_COUNT = "Sidecar-Dead-Delivery-Count"
_DEAD_AT = "Sidecar-Dead-At"
_OWN = frozenset({_DEAD_TOPIC, _DEAD_ID, _DEAD_GROUP, _DEAD_CONSUMER, _DEAD_COUNT, _DEAD_AT})
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_BATCH = 256
_FETCH_WAIT_MAX = 0.5
_NAK_DELAY = 0.05


def stream_name(subject: str) -> str:
    """A JetStream stream or consumer name for `subject` (names allow fewer characters)."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:10]
    return f"SC_{_UNSAFE.sub('_', subject)[:64]}_{digest}"


def _sequence(identifier: str) -> int:
    return int(identifier.partition("-")[2] or 0)


class NatsReliable(ReliablePubSub):
    """Reliable topics on NATS JetStream; see the module docstring.

    Args:
        connection: the nats connection (shared; closed by its owner).
        options: the service's reliable-topic settings (`ReliableOptions`).
        wall_clock: seconds since the epoch.
    """

    def __init__(
        self,
        connection: NatsConnection,
        options: ReliableOptions,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.errors = connection.errors
        self._name = options.name
        self._prefix = options.key_prefix
        self._max_length = options.max_length
        self.visibility_timeout = options.visibility_timeout
        self.max_deliveries = options.max_deliveries
        self.wall_clock = wall_clock
        self.dead_lettered = 0
        self._streams: set[str] = set()
        self._consumers: dict[_Consumer, None] = {}
        self._closed = False

    # -- ReliablePubSub ----------------------------------------------------------------------

    async def publish_reliable(
        self, topic: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> str:
        self._check_open()
        subject = self.subject(topic, "topic")
        js = await self.jetstream()
        await self._ensure_streams(js, topic)
        now = self.wall_clock()
        headers = {**(metadata or {}), PUBLISHED_AT: repr(now)}
        with self.errors:
            ack = await js.publish(subject, bytes(payload), headers=headers)
        return f"{int(now * 1000)}-{ack.seq}"

    async def consume(
        self, topics: Sequence[str], group: str, consumer: str | None, *, max_in_flight: int
    ) -> ReliableSubscription:
        self._check_open()
        if not topics or not group:
            raise ValueError("consume needs at least one topic and a group")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        topics = list(dict.fromkeys(topics))
        subjects = [self.subject(topic, f"channels[{i}]") for i, topic in enumerate(topics)]
        js = await self.jetstream()
        durable = stream_name(group)
        pulls = []
        for topic, subject in zip(topics, subjects, strict=True):
            await self._ensure_streams(js, topic)
            config = ConsumerConfig(
                durable_name=durable,
                description=f"sidecar group {group[:200]}",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.visibility_timeout,
                max_ack_pending=-1,
                filter_subject=subject,
            )
            with self.errors:
                await js.add_consumer(stream_name(subject), config)
                pulls.append(await js.pull_subscribe_bind(durable, stream_name(subject)))
        subscription = _Consumer(
            self, topics, pulls, group, consumer or _generated(), max_in_flight
        )
        self._consumers[subscription] = None
        return subscription

    async def acknowledge(self, topic: str, group: str, message_ids: Sequence[str]) -> int:
        self._check_open()
        acknowledged = 0
        for subscription in list(self._consumers):
            if subscription.group == group and topic in subscription.topics:
                acknowledged += await subscription.settle(topic, message_ids)
        return acknowledged

    async def read_dead_letters(
        self, topic: str, *, after: str | None, count: int
    ) -> list[DeadLetter]:
        self._check_open()
        js = await self.jetstream()
        await self._ensure_streams(js, topic)
        dead = self.dead_subject(topic)
        letters: list[DeadLetter] = []
        sequence = (_sequence(after) if after else 0) + 1
        while len(letters) < count:
            raw = await self._next_dead(js, dead, sequence)
            if raw is None:
                break
            letters.append(raw)
            sequence = _sequence(raw.dead_letter_id) + 1
        return letters

    async def replay_dead_letters(
        self, topic: str, dead_letter_ids: Sequence[str] | None, *, limit: int
    ) -> ReplayOutcome:
        self._check_open()
        js = await self.jetstream()
        await self._ensure_streams(js, topic)
        dead = self.dead_subject(topic)
        if dead_letter_ids is None:
            chosen = await self.read_dead_letters(topic, after=None, count=limit)
            missing: list[str] = []
        else:
            chosen, missing = [], []
            for identifier in dict.fromkeys(dead_letter_ids):
                letter = await self._dead_at(js, dead, _sequence(identifier))
                if letter is None or letter.dead_letter_id != identifier:
                    missing.append(identifier)
                else:
                    chosen.append(letter)
        replayed: list[Replayed] = []
        for letter in chosen[:limit]:
            message_id = await self.publish_reliable(topic, letter.payload, letter.metadata)
            with self.errors, contextlib.suppress(NotFound):
                await js.delete_msg(stream_name(dead), _sequence(letter.dead_letter_id))
            replayed.append(Replayed(letter.dead_letter_id, message_id))
        with self.errors:
            info = await js.stream_info(stream_name(dead))
        return ReplayOutcome(tuple(replayed), tuple(missing), int(info.state.messages))

    async def ping(self) -> None:
        self._check_open()
        await self.connection.ping()

    async def close(self) -> None:
        """Close every consumer (what they hold is nak'ed, so delivered again at once)."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._consumers):
            await subscription.close()

    def consumer_count(self) -> int:
        """Consumers currently open through this backend."""
        return len(self._consumers)

    def dead_lettered_total(self) -> int:
        """Messages this backend has moved to the dead letters since it was built."""
        return self.dead_lettered

    def declared_streams(self) -> list[str]:
        """The streams this backend made (for operators and tests that clean up)."""
        return [
            stream_name(subject)
            for topic in self._streams
            for subject in (self._prefix + topic, self.dead_subject(topic))
        ]

    # -- names, streams, dead letters --------------------------------------------------------

    def subject(self, topic: str, field: str) -> str:
        if topic.endswith(".dlq"):
            raise InvalidArgument(
                f"{field}: the suffix '.dlq' is reserved for dead letters",
                reason="INVALID_REQUEST",
                metadata={"field": field},
            )
        return check_subject(self._prefix + topic, field)

    def dead_subject(self, topic: str) -> str:
        return f"{self._prefix}{topic}.dlq"

    async def jetstream(self) -> JetStreamContext:
        js = await self.connection.jetstream()
        if not self.connection.connected:
            raise Unavailable(
                "the connection to NATS is down; it is reconnecting",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self._name},
            )
        return js

    async def _ensure_streams(self, js: JetStreamContext, topic: str) -> None:
        """The topic's stream and its dead-letter stream (once per process)."""
        if topic in self._streams:
            return
        for subject in (self.subject(topic, "topic"), self.dead_subject(topic)):
            config = StreamConfig(
                name=stream_name(subject), subjects=[subject], max_msgs=self._max_length
            )
            with self.errors:
                try:
                    await js.add_stream(config)
                except Exception as error:  # 10058: exists, other limits
                    if getattr(error, "err_code", None) != 10058:
                        raise
                    await js.update_stream(config)
        self._streams.add(topic)

    async def _next_dead(self, js: JetStreamContext, dead: str, sequence: int) -> DeadLetter | None:
        try:
            with self.errors:
                raw = await js.get_msg(stream_name(dead), seq=sequence, subject=dead, next=True)
        except NotFound:  # nothing at or after `sequence`
            return None
        return self._dead_letter(raw)

    async def _dead_at(self, js: JetStreamContext, dead: str, sequence: int) -> DeadLetter | None:
        if sequence < 1:
            return None
        letter = await self._next_dead(js, dead, sequence)
        return (
            letter if letter is not None and _sequence(letter.dead_letter_id) == sequence else None
        )

    def _dead_letter(self, raw: Any) -> DeadLetter:
        headers: dict[str, str] = dict(raw.headers or {})
        metadata = {k: v for k, v in headers.items() if k not in _OWN and k != PUBLISHED_AT}
        metadata = {k: v for k, v in metadata.items() if not k.startswith("Nats-")}
        dead_at = float(headers.get(_DEAD_AT, "0") or 0)
        return DeadLetter(
            dead_letter_id=f"{int(dead_at * 1000)}-{raw.seq}",
            topic=headers.get(_DEAD_TOPIC, ""),
            message_id=headers.get(_DEAD_ID, ""),
            payload=raw.data or b"",
            metadata=metadata,
            published_at=float(headers.get(PUBLISHED_AT, dead_at) or dead_at),
            delivery_count=int(headers.get(_DEAD_COUNT, "0") or 0),
            group=headers.get(_DEAD_GROUP, ""),
            consumer=headers.get(_DEAD_CONSUMER, ""),
            dead_lettered_at=dead_at,
        )

    def forget(self, subscription: _Consumer) -> None:
        self._consumers.pop(subscription, None)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                "the reliable-topic backend is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )


def _generated() -> str:
    return f"sidecar-{uuid.uuid4().hex[:16]}"


class _Consumer(ReliableSubscription):
    """One consumer of a group: a fetch loop per topic feeding one queue; see the module
    docstring."""

    def __init__(
        self,
        backend: NatsReliable,
        topics: list[str],
        pulls: list[Any],
        group: str,
        consumer: str,
        max_in_flight: int,
    ) -> None:
        self._backend = backend
        self.topics = topics
        self.group = group
        self._consumer = consumer
        self._max_in_flight = max_in_flight
        self._pulls = pulls
        self._held: dict[tuple[str, str], tuple[Msg, asyncio.TimerHandle]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._requests_expire = 0.0
        """Loop time when the last pull request sent expires on the server."""
        self._arrived: asyncio.Queue[ReliableMessage | None] = asyncio.Queue()
        self._closed = False
        self._loops = [
            asyncio.ensure_future(self._fetch(topic, pull))
            for topic, pull in zip(topics, pulls, strict=True)
        ]

    @property
    def consumer(self) -> str:
        return self._consumer

    def __aiter__(self) -> AsyncIterator[ReliableMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[ReliableMessage]:
        try:
            while not self._closed:
                message = await self._arrived.get()
                if message is None:
                    return
                if (message.topic, message.message_id) in self._held:
                    yield message
        finally:
            await asyncio.shield(self.close())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._backend.forget(self)
        self._room.set()
        # A pull request stays open on the server until it expires, even after its fetch
        # returned with fewer messages than asked: it would take the very messages naked
        # below and hand them to nobody (back only after the ack wait). So let each loop
        # finish its fetch, and let the last request expire, before naking what is held.
        with contextlib.suppress(Exception):
            await asyncio.wait(self._loops, timeout=_FETCH_WAIT_MAX + 1)
        for loop in self._loops:
            loop.cancel()
        loop_time = asyncio.get_running_loop().time()
        await asyncio.sleep(max(0.0, self._requests_expire - loop_time))
        self._arrived.put_nowait(None)
        held, self._held = list(self._held.values()), {}
        for msg, timer in held:
            timer.cancel()
            with contextlib.suppress(Exception):
                # A short delay: nats-server 2.9 was seen to redeliver the wrong sequence
                # (one message twice, another not until its ack wait) when a nak raced a
                # new pull request of the same durable (a consumer reconnecting at once).
                await msg.nak(delay=_NAK_DELAY)
        for pull in self._pulls:
            with contextlib.suppress(Exception):
                await pull.unsubscribe()

    async def settle(self, topic: str, message_ids: Sequence[str]) -> int:
        """Ack what this consumer holds of `message_ids`; how many it held. Returns once the
        server has the acks: they are written, then one PING/PONG round trip (the server
        handles a connection's messages in order) instead of one round trip per ack."""
        taken = [self._held.pop((topic, i), None) for i in message_ids]
        held = [entry for entry in taken if entry is not None]
        if not held:
            return 0
        self._room.set()
        backend = self._backend
        with backend.errors:
            for msg, timer in held:
                timer.cancel()
                await msg.ack()
            client = await backend.connection.client()
            await client.flush(timeout=max(1, round(backend.connection.request_timeout)))
        return len(held)

    def _expire(self, key: tuple[str, str]) -> None:
        """The ack wait passed: the server delivers it again; it no longer takes room here."""
        if self._held.pop(key, None) is not None:
            self._room.set()

    async def _fetch(self, topic: str, pull: Any) -> None:
        backend = self._backend
        # Not shorter than 0.1 s: a request expiring as the server answers it loses that
        # delivery until the ack wait, and a loaded event loop makes that likelier.
        wait = min(max(backend.visibility_timeout / 4, 0.1), _FETCH_WAIT_MAX)
        while not self._closed:
            room = self._max_in_flight - len(self._held)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            self._requests_expire = asyncio.get_running_loop().time() + wait
            try:
                batch = await pull.fetch(batch=min(room, _MAX_BATCH), timeout=wait)
            except (TimeoutError, core_errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # link down: nats-py reconnects; fetch again
                await asyncio.sleep(backend.connection.endpoint.reconnect_interval)
                continue
            for msg in batch:
                await self._received(topic, msg)

    async def _received(self, topic: str, msg: Msg) -> None:
        backend = self._backend
        metadata_info = msg.metadata
        delivered = metadata_info.num_delivered
        stored = metadata_info.timestamp
        # Without the sidecar's header (another publisher), the stream's own time of the
        # message: stable across deliveries, so its id is too.
        stored_at = stored.timestamp() if isinstance(stored, datetime) else float(stored)
        metadata, published_at = split_headers(msg, stored_at)
        message_id = f"{int(published_at * 1000)}-{metadata_info.sequence.stream}"
        if delivered > backend.max_deliveries:
            await self._dead_letter(
                topic, msg, message_id, metadata, published_at, backend.max_deliveries
            )
            return
        key = (topic, message_id)
        old = self._held.pop(key, None)
        if old is not None:
            old[1].cancel()
        timer = asyncio.get_running_loop().call_later(backend.visibility_timeout, self._expire, key)
        self._held[key] = (msg, timer)
        self._arrived.put_nowait(
            ReliableMessage(topic, message_id, msg.data, metadata, published_at, delivered)
        )

    async def _dead_letter(
        self,
        topic: str,
        msg: Msg,
        message_id: str,
        metadata: Mapping[str, str],
        published_at: float,
        deliveries: int,
    ) -> None:
        backend = self._backend
        now = backend.wall_clock()
        headers = {
            **metadata,
            PUBLISHED_AT: repr(published_at),
            _DEAD_TOPIC: topic,
            _DEAD_ID: message_id,
            _DEAD_GROUP: self.group,
            _DEAD_CONSUMER: self._consumer,
            _DEAD_COUNT: str(deliveries),
            _DEAD_AT: repr(now),
        }
        try:
            js = await backend.jetstream()
            with backend.errors:
                await js.publish(backend.dead_subject(topic), msg.data, headers=headers)
                await msg.term()
        except Exception:  # not terminated: the server delivers it again
            return
        backend.dead_lettered += 1
