"""PubSubService: Publish and the Subscribe stream over the configured pub/sub integrations.

Open subscriptions are tracked so that shutdown can end every stream with a clean OK status
while unary calls are still finishing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from google.protobuf import timestamp_pb2

from generated.integration.v1 import pubsub_pb2, pubsub_pb2_grpc
from sidecar.backends.pubsub import Message, Subscription
from sidecar.runtime import Integrations
from sidecar.services._common import Context, call_through, invalid, require_name, resolve

__all__ = ["PubSubServicer"]

_MAX_NAME = 1024
_MAX_SUBSCRIPTIONS_PER_CALL = 100
_MAX_METADATA_ENTRIES = 64


class PubSubServicer(pubsub_pb2_grpc.PubSubServiceServicer):
    """Serve PubSubService over the configured pub/sub integrations."""

    def __init__(self, integrations: Integrations) -> None:
        self._integrations = integrations
        self._open: set[Subscription] = set()

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
        if not channels and not patterns:
            raise invalid("channels", "name at least one channel or pattern")
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
            async for event in subscription:
                if isinstance(event, Message):
                    yield pubsub_pb2.SubscribeResponse(message=_message(event))
                else:
                    yield pubsub_pb2.SubscribeResponse(
                        dropped=pubsub_pb2.MessagesDropped(count=event.count)
                    )
        finally:
            self._open.discard(subscription)
            # Shielded so a cancelled stream still frees its subscription before unwinding.
            await asyncio.shield(subscription.close())

    async def end_streams(self) -> None:
        """End every open Subscribe stream cleanly (used at shutdown)."""
        await asyncio.gather(*(sub.close() for sub in list(self._open)), return_exceptions=True)


def _names(values: Sequence[str], field: str) -> list[str]:
    if len(values) > _MAX_SUBSCRIPTIONS_PER_CALL:
        raise invalid(field, f"at most {_MAX_SUBSCRIPTIONS_PER_CALL} per subscription")
    return [require_name(value, f"{field}[{i}]", _MAX_NAME) for i, value in enumerate(values)]


def _message(message: Message) -> pubsub_pb2.PubSubMessage:
    published = timestamp_pb2.Timestamp()
    published.FromNanoseconds(int(message.published_at * 1e9))
    return pubsub_pb2.PubSubMessage(
        channel=message.channel,
        payload=message.payload,
        metadata=dict(message.metadata),
        pattern=message.pattern or "",
        publish_time=published,
    )
