"""PubSubService: Publish and the Subscribe stream over the configured pub/sub integrations,
plus acknowledgements and dead letters of reliable topics.

A channel matching the target's `reliable_topics` goes to the backend's `ReliablePubSub`
side (Redis Streams, at-least-once); any other channel to plain pub/sub (at-most-once). Open
subscriptions are tracked so that shutdown can end every stream with a clean OK status
while unary calls are still finishing; unacknowledged reliable messages then simply stay
pending in Redis for redelivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from google.protobuf import timestamp_pb2

from generated.integration.v1 import common_pb2, pubsub_pb2, pubsub_pb2_grpc
from sidecar.backends.pubsub import Gap, Message, ReliableSubscription, Subscription
from sidecar.observability.tracing import (
    TRACEPARENT_HEADER,
    annotate_span,
    current_traceparent,
)
from sidecar.runtime import Integration, Integrations
from sidecar.servicers import _reliable as reliable
from sidecar.servicers._common import Context, call_through, invalid, require_name, resolve

__all__ = ["PubSubServicer"]

_MAX_NAME = 1024
_MAX_SUBSCRIPTIONS_PER_CALL = 100
_MAX_METADATA_ENTRIES = 64
_DEFAULT_PAGE = 100
_MAX_PAGE = 1000
_MAX_REPLAY = 1000


class PubSubServicer(pubsub_pb2_grpc.PubSubServiceServicer):
    """Serve PubSubService over the configured pub/sub integrations."""

    def __init__(self, integrations: Integrations) -> None:
        self._integrations = integrations
        self._open: set[Subscription | ReliableSubscription] = set()

    async def Publish(
        self, request: pubsub_pb2.PublishRequest, context: Context
    ) -> pubsub_pb2.PublishResponse:
        broker = resolve(self._integrations, "pubsub", request.target)
        channel = require_name(request.channel, "channel", _MAX_NAME)
        limit: int = broker.settings.max_payload_size
        if len(request.payload) > limit:
            raise invalid(
                "payload",
                f"is {len(request.payload)} bytes; the limit is {limit}",
                "VALUE_TOO_LARGE",
            )
        if len(request.metadata) > _MAX_METADATA_ENTRIES:
            raise invalid("metadata", f"at most {_MAX_METADATA_ENTRIES} entries")
        payload, metadata = request.payload, dict(request.metadata)
        traceparent = current_traceparent()
        if traceparent is not None:  # subscribers' spans can join the publisher's trace
            metadata.setdefault(TRACEPARENT_HEADER, traceparent)
            annotate_span({"messaging.destination.name": channel})
        if request.schema:  # checked before anything is published
            await self._integrations.transforms.check(request.schema, payload, field="payload")
        if reliable.is_reliable(broker, channel, "channel"):
            publish = reliable.publisher(broker, request.ordering_key)
            message_id = await call_through(
                broker,
                context,
                lambda: publish(channel, payload, metadata),
                idempotent=False,
            )
            return pubsub_pb2.PublishResponse(message_id=message_id)
        receivers = await call_through(
            broker,
            context,
            lambda: broker.backend.publish(channel, payload, metadata),
            idempotent=False,
        )
        return pubsub_pb2.PublishResponse(receivers=receivers)

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
        if request.consumer or request.max_in_flight:
            raise invalid("group", "consumer and max_in_flight apply to a consumer group")
        for i, channel in enumerate(channels):
            if reliable.is_reliable(broker, channel, f"channels[{i}]"):
                raise invalid("group", f"reliable topic {channel!r} is consumed through a group")
        buffer_size: int = broker.settings.subscriber_buffer
        subscription: Subscription = await call_through(
            broker,
            context,
            lambda: broker.backend.subscribe(channels, patterns, buffer_size=buffer_size),
        )
        self._open.add(subscription)
        try:
            yield pubsub_pb2.SubscribeResponse(
                started=pubsub_pb2.SubscriptionStarted(channels=channels, patterns=patterns)
            )
            counts = self._integrations.messages
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


def _names(values: Sequence[str], field: str) -> list[str]:
    if len(values) > _MAX_SUBSCRIPTIONS_PER_CALL:
        raise invalid(field, f"at most {_MAX_SUBSCRIPTIONS_PER_CALL} per subscription")
    return [require_name(value, f"{field}[{i}]", _MAX_NAME) for i, value in enumerate(values)]


def _message(message: Message) -> pubsub_pb2.PubSubMessage:
    return pubsub_pb2.PubSubMessage(
        channel=message.channel,
        payload=message.payload,
        metadata=dict(message.metadata),
        pattern=message.pattern or "",
        publish_time=_timestamp(message.published_at),
    )


def _gap(gap: Gap) -> pubsub_pb2.SubscriptionGap:
    ended = _timestamp(gap.ended_at) if gap.ended_at is not None else None
    return pubsub_pb2.SubscriptionGap(started_at=_timestamp(gap.started_at), ended_at=ended)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
