"""PubSubService: Publish, PublishBatch and the Subscribe stream over the configured pub/sub
integrations, plus acknowledgements and dead letters of reliable topics.

A subscriber that sets `max_batch` gets every message already waiting for it in one frame
(`read_ahead_batches`: no timer, a lone message goes at once). On plain channels
`max_in_flight` is the subscriber's credit: its buffer, paced on backends with the feature
`paced` (the memory broker makes publishers wait), dropping the oldest elsewhere.

A channel matching the target's `reliable_topics` goes to the backend's `ReliablePubSub`
side (Redis Streams, at-least-once); any other channel to plain pub/sub (at-most-once). Open
subscriptions are tracked so that shutdown can end every stream with a clean OK status
while unary calls are still finishing; unacknowledged reliable messages then simply stay
pending in Redis for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import timestamp_pb2

from generated.integration.v1 import common_pb2, pubsub_pb2, pubsub_pb2_grpc
from sidecar.backends.pubsub import (
    Gap,
    Message,
    ReliableSubscription,
    Subscription,
    SubscriptionEvent,
)
from sidecar.backends.pubsub.base import PacedPubSub
from sidecar.backends.pubsub.reliable import publish_reliable_all
from sidecar.errors import ResourceExhausted
from sidecar.observability.tracing import (
    TRACEPARENT_HEADER,
    annotate_span,
    current_traceparent,
)
from sidecar.runtime import Integration, Integrations
from sidecar.servicers import _reliable as reliable
from sidecar.servicers._common import Context, call_through, invalid, require_name, resolve
from sidecar.servicers._read_ahead import read_ahead_batches

__all__ = ["PubSubServicer"]

_MAX_NAME = 1024
_MAX_SUBSCRIPTIONS_PER_CALL = 100
_MAX_METADATA_ENTRIES = 64
_DEFAULT_PAGE = 100
_MAX_PAGE = 1000
_MAX_REPLAY = 1000
_MAX_BATCH = 1000
_MAX_BATCH_PUBLISH_BYTES = 16 * 1024 * 1024
_DEFAULT_BATCH_BYTES = 1024 * 1024
# Room left in a frame of max_batch_bytes for what the payloads' bytes do not count.
_FRAME_HEADROOM = 64 * 1024
# What one message adds to a batch frame beyond its own size: its tag and length.
_ENTRY_OVERHEAD = 8


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One checked message to publish."""

    channel: str
    payload: bytes
    metadata: dict[str, str]
    reliable: bool
    ordering_key: str


class PubSubServicer(pubsub_pb2_grpc.PubSubServiceServicer):
    """Serve PubSubService over the configured pub/sub integrations."""

    def __init__(self, integrations: Integrations, *, max_message_bytes: int = 4 << 20) -> None:
        """`max_message_bytes` is the server's largest response message: it bounds the
        frames of batching subscribers (SubscribeRequest.max_batch_bytes)."""
        self._integrations = integrations
        self._open: set[Subscription | ReliableSubscription] = set()
        self._max_frame = max(max_message_bytes - _FRAME_HEADROOM, 1)

    async def Publish(
        self, request: pubsub_pb2.PublishRequest, context: Context
    ) -> pubsub_pb2.PublishResponse:
        broker = resolve(self._integrations, "pubsub", request.target)
        message = await self._checked(broker, request, "")
        if message.reliable:
            publish = reliable.publisher(broker, message.ordering_key)
            message_id = await call_through(
                broker,
                context,
                lambda: publish(message.channel, message.payload, message.metadata),
                idempotent=False,
            )
            return pubsub_pb2.PublishResponse(message_id=message_id)
        receivers = await call_through(
            broker,
            context,
            lambda: broker.backend.publish(message.channel, message.payload, message.metadata),
            idempotent=False,
        )
        return pubsub_pb2.PublishResponse(receivers=receivers)

    async def PublishBatch(
        self, request: pubsub_pb2.PublishBatchRequest, context: Context
    ) -> pubsub_pb2.PublishBatchResponse:
        broker = resolve(self._integrations, "pubsub", request.target)
        entries = request.messages
        if not entries:
            raise invalid("messages", "name at least one message")
        if len(entries) > _MAX_BATCH:
            raise invalid("messages", f"at most {_MAX_BATCH} per call")
        total = sum(len(entry.payload) for entry in entries)
        if total > _MAX_BATCH_PUBLISH_BYTES:
            raise ResourceExhausted(
                f"the payloads total {total} bytes; a batch carries at most "
                f"{_MAX_BATCH_PUBLISH_BYTES}",
                reason="BATCH_TOO_LARGE",
                metadata={"target": broker.name},
            )
        # Every message is checked before any is published.
        messages = [
            await self._checked(broker, e, f"messages[{i}].") for i, e in enumerate(entries)
        ]
        results = await call_through(
            broker, context, lambda: _publish_all(broker, messages), idempotent=False
        )
        return pubsub_pb2.PublishBatchResponse(results=results)

    async def _checked(
        self,
        broker: Integration[Any],
        request: pubsub_pb2.PublishRequest | pubsub_pb2.PublishBatchEntry,
        field: str,
    ) -> _Outgoing:
        """The message of a Publish (or one of a PublishBatch, its fields under `field`),
        checked: names, sizes, the schema, and whether its channel is a reliable topic."""
        channel = require_name(request.channel, f"{field}channel", _MAX_NAME)
        limit: int = broker.settings.max_payload_size
        if len(request.payload) > limit:
            raise invalid(
                f"{field}payload",
                f"is {len(request.payload)} bytes; the limit is {limit}",
                "VALUE_TOO_LARGE",
            )
        if len(request.metadata) > _MAX_METADATA_ENTRIES:
            raise invalid(f"{field}metadata", f"at most {_MAX_METADATA_ENTRIES} entries")
        metadata = dict(request.metadata)
        traceparent = current_traceparent()
        if traceparent is not None:  # subscribers' spans can join the publisher's trace
            metadata.setdefault(TRACEPARENT_HEADER, traceparent)
            annotate_span({"messaging.destination.name": channel})
        if request.schema:  # checked before anything is published
            await self._integrations.transforms.check(
                request.schema, request.payload, field=f"{field}payload"
            )
        is_reliable = reliable.is_reliable(broker, channel, f"{field}channel")
        if is_reliable:
            reliable.publisher(broker, request.ordering_key)  # checks the key and the backend
        return _Outgoing(channel, request.payload, metadata, is_reliable, request.ordering_key)

    async def Subscribe(
        self, request: pubsub_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[pubsub_pb2.SubscribeResponse]:
        broker = resolve(self._integrations, "pubsub", request.target)
        channels = _names(request.channels, "channels")
        patterns = _names(request.patterns, "patterns")
        if request.group:
            async for response in self._consume(broker, request, channels, context):
                yield response
            return
        if not channels and not patterns:
            raise invalid("channels", "name at least one channel or pattern")
        if request.consumer:
            raise invalid("group", "consumer applies to a consumer group")
        for i, channel in enumerate(channels):
            if reliable.is_reliable(broker, channel, f"channels[{i}]"):
                raise invalid("group", f"reliable topic {channel!r} is consumed through a group")
        frames = self._framing(request)
        subscribe = _subscriber(broker, channels, patterns, request.max_in_flight)
        subscription: Subscription = await call_through(broker, context, subscribe)
        self._open.add(subscription)
        try:
            yield pubsub_pb2.SubscribeResponse(
                started=pubsub_pb2.SubscriptionStarted(channels=channels, patterns=patterns)
            )
            counts = self._integrations.messages
            if frames is not None:
                async for response in frames.of(subscription.batches(frames.count), _event):
                    if response.HasField("batch"):
                        counts.add(broker.name, "delivered", len(response.batch.messages))
                    elif response.HasField("dropped"):
                        counts.add(broker.name, "dropped", response.dropped.count)
                    yield response
                return
            async for event in subscription:
                if isinstance(event, Message):
                    counts.add(broker.name, "delivered")
                    yield pubsub_pb2.SubscribeResponse(message=_message(event))
                elif isinstance(event, Gap):
                    yield pubsub_pb2.SubscribeResponse(gap=_gap(event))
                else:
                    counts.add(broker.name, "dropped", event.count)
                    yield pubsub_pb2.SubscribeResponse(
                        dropped=pubsub_pb2.MessagesDropped(count=event.count)
                    )
        finally:
            self._open.discard(subscription)
            # Shielded so a cancelled stream still frees its subscription before unwinding.
            await asyncio.shield(subscription.close())

    def _framing(self, request: pubsub_pb2.SubscribeRequest) -> _Framing | None:
        """How a subscriber that set max_batch gets its messages in frames (None: one
        message per frame)."""
        if not 0 <= request.max_batch <= _MAX_BATCH:
            raise invalid("max_batch", f"must be between 0 and {_MAX_BATCH}")
        if not 0 <= request.max_batch_bytes <= self._max_frame:
            raise invalid("max_batch_bytes", f"must be between 0 and {self._max_frame}")
        if not request.max_batch:
            if request.max_batch_bytes:
                raise invalid("max_batch_bytes", "applies with max_batch")
            return None
        limit = request.max_batch_bytes or min(_DEFAULT_BATCH_BYTES, self._max_frame)
        return _Framing(request.max_batch, limit)

    async def _consume(
        self,
        broker: Integration[Any],
        request: pubsub_pb2.SubscribeRequest,
        topics: list[str],
        context: Context,
    ) -> AsyncIterator[pubsub_pb2.SubscribeResponse]:
        """Subscribe with a group: consume reliable topics, at most max_in_flight unacked."""
        group = reliable.group(request.group)
        consumer = reliable.group(request.consumer, "consumer") if request.consumer else None
        max_in_flight = reliable.in_flight(request.max_in_flight)
        frames = self._framing(request)
        if request.patterns:
            raise invalid("patterns", "a consumer group reads named reliable topics, not patterns")
        if not topics:
            raise invalid("channels", "name at least one reliable topic")
        for i, topic in enumerate(topics):
            if not reliable.is_reliable(broker, topic, f"channels[{i}]"):
                raise reliable.not_reliable(broker, topic, f"channels[{i}]")
        backend = reliable.reliable_backend(broker)
        subscription: ReliableSubscription = await call_through(
            broker,
            context,
            lambda: backend.consume(topics, group, consumer, max_in_flight=max_in_flight),
        )
        self._open.add(subscription)
        try:
            yield pubsub_pb2.SubscribeResponse(
                started=pubsub_pb2.SubscriptionStarted(
                    channels=topics, group=group, consumer=subscription.consumer
                )
            )
            counts = self._integrations.messages
            if frames is not None:
                # Reliable subscriptions yield one message at a time: a task reads ahead
                # (within max_in_flight) so that whatever waited goes in one frame.
                ready = read_ahead_batches(aiter(subscription), frames.count)
                async for response in frames.of(ready, reliable.message):
                    delivered = response.batch.messages
                    counts.add(broker.name, "delivered", len(delivered))
                    if again := sum(1 for m in delivered if m.delivery_count > 1):
                        counts.add(broker.name, "redelivered", again)
                    yield response
                return
            async for message in subscription:
                counts.add(broker.name, "delivered")
                if message.delivery_count > 1:
                    counts.add(broker.name, "redelivered")
                yield pubsub_pb2.SubscribeResponse(message=reliable.message(message))
        finally:
            self._open.discard(subscription)
            await asyncio.shield(subscription.close())

    async def Acknowledge(
        self, request: pubsub_pb2.AcknowledgeRequest, context: Context
    ) -> pubsub_pb2.AcknowledgeResponse:
        broker = resolve(self._integrations, "pubsub", request.target)
        topic = reliable.require_reliable(broker, request.topic, "topic")
        group = reliable.group(request.group)
        ids = reliable.ids(request.message_ids, "message_ids")
        backend = reliable.reliable_backend(broker)
        acknowledged = await call_through(
            broker, context, lambda: backend.acknowledge(topic, group, ids)
        )
        self._integrations.messages.add(broker.name, "acknowledged", acknowledged)
        return pubsub_pb2.AcknowledgeResponse(acknowledged=acknowledged)

    async def ReadDeadLetters(
        self, request: pubsub_pb2.ReadDeadLettersRequest, context: Context
    ) -> pubsub_pb2.ReadDeadLettersResponse:
        broker = resolve(self._integrations, "pubsub", request.target)
        topic = reliable.require_reliable(broker, request.topic, "topic")
        if request.page.page_size < 0:
            raise invalid("page.page_size", "must not be negative")
        size = min(request.page.page_size or _DEFAULT_PAGE, _MAX_PAGE)
        after = reliable.page_token(request.page.page_token)
        backend = reliable.reliable_backend(broker)
        # One more than the page, to know whether another page follows.
        letters = await call_through(
            broker, context, lambda: backend.read_dead_letters(topic, after=after, count=size + 1)
        )
        page = letters[:size]
        token = page[-1].dead_letter_id if len(letters) > size else ""
        return pubsub_pb2.ReadDeadLettersResponse(
            dead_letters=[reliable.dead_letter(letter) for letter in page],
            page=common_pb2.PageResponse(next_page_token=token),
        )

    async def ReplayDeadLetters(
        self, request: pubsub_pb2.ReplayDeadLettersRequest, context: Context
    ) -> pubsub_pb2.ReplayDeadLettersResponse:
        broker = resolve(self._integrations, "pubsub", request.target)
        topic = reliable.require_reliable(broker, request.topic, "topic")
        if request.replay_all and request.dead_letter_ids:
            raise invalid("replay_all", "name dead_letter_ids or set replay_all, not both")
        named = None
        if not request.replay_all:
            named = reliable.ids(request.dead_letter_ids, "dead_letter_ids")
        backend = reliable.reliable_backend(broker)
        outcome = await call_through(
            broker,
            context,
            lambda: backend.replay_dead_letters(topic, named, limit=_MAX_REPLAY),
            idempotent=False,
        )
        return pubsub_pb2.ReplayDeadLettersResponse(
            replayed=[
                pubsub_pb2.ReplayedMessage(dead_letter_id=r.dead_letter_id, message_id=r.message_id)
                for r in outcome.replayed
            ],
            not_found=outcome.not_found,
            remaining=outcome.remaining,
        )

    async def end_streams(self) -> None:
        """End every open Subscribe stream cleanly (used at shutdown)."""
        await asyncio.gather(*(sub.close() for sub in list(self._open)), return_exceptions=True)


_Converted = pubsub_pb2.PubSubMessage | pubsub_pb2.SubscribeResponse
"""A message to put in a batch frame, or an event that is a frame of its own."""


@dataclass(frozen=True, slots=True)
class _Framing:
    """A batching subscriber's frames: at most `count` messages and about `limit` bytes."""

    count: int
    limit: int

    async def of(
        self,
        batches: AsyncGenerator[Sequence[Any], None],
        convert: Callable[[Any], _Converted],
    ) -> AsyncIterator[pubsub_pb2.SubscribeResponse]:
        """The frames of `batches` (lists of events, each converted by `convert`), which
        are closed when the frames end (a read-ahead task is stopped then, not later)."""
        async with contextlib.aclosing(batches):
            async for ready in batches:
                for frame in _frames(map(convert, ready), self.limit):
                    yield frame


def _subscriber(
    broker: Integration[Any], channels: list[str], patterns: list[str], max_in_flight: int
) -> Callable[[], Awaitable[Subscription]]:
    """The subscribe call for plain channels: with a credit (max_in_flight), a buffer of that
    many, paced where the backend can hold messages; without, subscriber_buffer, dropping."""
    backend = broker.backend
    if not max_in_flight:
        buffer_size: int = broker.settings.subscriber_buffer
        return lambda: backend.subscribe(channels, patterns, buffer_size=buffer_size)
    credit = reliable.in_flight(max_in_flight)
    if "paced" not in broker.features:  # it cannot hold messages: the oldest are dropped
        return lambda: backend.subscribe(channels, patterns, buffer_size=credit)
    paced = cast(PacedPubSub, backend)
    return lambda: paced.subscribe(channels, patterns, buffer_size=credit, paced=True)


async def _publish_all(
    broker: Integration[Any], messages: list[_Outgoing]
) -> list[pubsub_pb2.PublishResponse]:
    """Publish `messages` in order: each run of reliable ones without an ordering key that
    the backend keeps as one batch call (Redis: one pipeline), the others one by one."""
    results: list[pubsub_pb2.PublishResponse] = []
    keyed = "ordering_keys" in broker.features
    run: list[_Outgoing] = []

    async def flush() -> None:
        if run:
            backend = reliable.reliable_backend(broker)
            batch = [(m.channel, m.payload, m.metadata) for m in run]
            ids = await publish_reliable_all(backend, batch)
            results.extend(pubsub_pb2.PublishResponse(message_id=i) for i in ids)
            run.clear()

    for message in messages:
        if message.reliable and not (keyed and message.ordering_key):
            run.append(message)
            continue
        await flush()
        if message.reliable:
            publish = reliable.publisher(broker, message.ordering_key)
            message_id = await publish(message.channel, message.payload, message.metadata)
            results.append(pubsub_pb2.PublishResponse(message_id=message_id))
        else:
            receivers = await broker.backend.publish(
                message.channel, message.payload, message.metadata
            )
            results.append(pubsub_pb2.PublishResponse(receivers=receivers))
    await flush()
    return results


def _event(event: SubscriptionEvent) -> _Converted:
    """A plain subscription's event: a message for a batch, or a frame of its own."""
    if isinstance(event, Message):
        return _message(event)
    if isinstance(event, Gap):
        return pubsub_pb2.SubscribeResponse(gap=_gap(event))
    return pubsub_pb2.SubscribeResponse(dropped=pubsub_pb2.MessagesDropped(count=event.count))


def _frames(items: Iterable[_Converted], limit: int) -> Iterator[pubsub_pb2.SubscribeResponse]:
    """Frames of consecutive messages up to `limit` bytes (a larger one alone); any other
    event is a frame of its own, in order."""
    batch: list[pubsub_pb2.PubSubMessage] = []
    size = 0
    for item in items:
        if isinstance(item, pubsub_pb2.SubscribeResponse):
            if batch:
                yield _batch(batch)
                batch, size = [], 0
            yield item
            continue
        entry = item.ByteSize() + _ENTRY_OVERHEAD
        if batch and size + entry > limit:
            yield _batch(batch)
            batch, size = [], 0
        batch.append(item)
        size += entry
    if batch:
        yield _batch(batch)


def _batch(messages: list[pubsub_pb2.PubSubMessage]) -> pubsub_pb2.SubscribeResponse:
    response = pubsub_pb2.SubscribeResponse()
    response.batch.messages.extend(messages)
    return response


def _names(values: Sequence[str], field: str) -> list[str]:
    if len(values) > _MAX_SUBSCRIPTIONS_PER_CALL:
        raise invalid(field, f"at most {_MAX_SUBSCRIPTIONS_PER_CALL} per subscription")
    return [require_name(value, f"{field}[{i}]", _MAX_NAME) for i, value in enumerate(values)]


def _message(message: Message) -> pubsub_pb2.PubSubMessage:
    # Built in place (no Timestamp or metadata dict copied in): half the cost per message,
    # which is most of a batch frame's.
    delivered = pubsub_pb2.PubSubMessage(
        channel=message.channel, payload=message.payload, pattern=message.pattern or ""
    )
    if message.metadata:
        delivered.metadata.update(message.metadata)
    stamp = delivered.publish_time
    stamp.seconds, stamp.nanos = divmod(int(message.published_at * 1e9), 1_000_000_000)
    return delivered


def _gap(gap: Gap) -> pubsub_pb2.SubscriptionGap:
    ended = _timestamp(gap.ended_at) if gap.ended_at is not None else None
    return pubsub_pb2.SubscriptionGap(started_at=_timestamp(gap.started_at), ended_at=ended)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
