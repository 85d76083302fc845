"""PubSubService helpers for reliable topics: which channels are reliable, request
validation, and mapping the domain types of `sidecar.backends.pubsub` to proto messages.

A channel is reliable when it matches one of the target's `reliable_topics` globs; only
then does a request reach the target's `ReliablePubSub` (Redis Streams), and only such a
topic has consumer groups, acknowledgements and dead letters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from google.protobuf import timestamp_pb2

from generated.integration.v1 import pubsub_pb2
from sidecar.backends.pubsub import DeadLetter, ReliableMessage, ReliablePubSub, glob_match
from sidecar.backends.pubsub.reliable import ReliableWithOrderingKeys
from sidecar.errors import FailedPrecondition, InvalidArgument
from sidecar.runtime import Integration
from sidecar.servicers._common import invalid, require_name

__all__ = [
    "DEFAULT_IN_FLIGHT",
    "dead_letter",
    "group",
    "ids",
    "in_flight",
    "is_reliable",
    "message",
    "not_reliable",
    "page_token",
    "publisher",
    "reliable_backend",
    "require_reliable",
]

DEFAULT_IN_FLIGHT = 100
_MAX_IN_FLIGHT = 10_000
_MAX_IDS = 1000
_MAX_GROUP = 256
_MAX_ORDERING_KEY = 256
_DEAD_LETTER_SUFFIX = ":dlq"
_STREAM_ID = re.compile(r"\A[0-9]{1,20}-[0-9]{1,20}\Z")


def is_reliable(broker: Integration[Any], channel: str, field: str) -> bool:
    """Whether `channel` is one of the target's reliable topics.

    Raises:
        InvalidArgument: it is, but ends in `:dlq`, the suffix of the dead-letter streams.
    """
    patterns: Sequence[str] = getattr(broker.settings, "reliable_topics", ())
    if not any(glob_match(pattern, channel) for pattern in patterns):
        return False
    if channel.endswith(_DEAD_LETTER_SUFFIX):
        raise invalid(field, f"the suffix {_DEAD_LETTER_SUFFIX!r} is reserved for dead letters")
    return True


def require_reliable(broker: Integration[Any], topic: str, field: str) -> str:
    """`topic`, checked to be a non-empty reliable topic of the target."""
    require_name(topic, field, 1024)
    if not is_reliable(broker, topic, field):
        raise not_reliable(broker, topic, field)
    return topic


def not_reliable(broker: Integration[Any], topic: str, field: str) -> InvalidArgument:
    """The error for a plain channel used where a reliable topic is needed."""
    return invalid(
        field,
        f"{topic!r} is not a reliable topic of {broker.name!r} (see its reliable_topics)",
        "TOPIC_NOT_RELIABLE",
    )


def reliable_backend(broker: Integration[Any]) -> ReliablePubSub:
    """The target's backend as a `ReliablePubSub`.

    Raises:
        FailedPrecondition: the backend has no reliable topics (UNSUPPORTED_OPERATION).
    """
    backend = broker.backend
    if not isinstance(backend, ReliablePubSub):
        raise FailedPrecondition(
            f"the {broker.backend_name} backend of {broker.name!r} has no reliable topics",
            reason="UNSUPPORTED_OPERATION",
            metadata={"target": broker.name},
        )
    return backend


def publisher(
    broker: Integration[Any], ordering_key: str
) -> Callable[[str, bytes, Mapping[str, str]], Awaitable[str]]:
    """The target's `publish_reliable`, keeping `ordering_key`'s order where the backend
    has the `ordering_keys` feature (elsewhere the key is accepted and ignored).

    Raises:
        InvalidArgument: the key is over 256 bytes.
        FailedPrecondition: the backend has no reliable topics (UNSUPPORTED_OPERATION).
    """
    if len(ordering_key.encode()) > _MAX_ORDERING_KEY:
        raise invalid("ordering_key", f"at most {_MAX_ORDERING_KEY} bytes")
    backend = reliable_backend(broker)
    if not ordering_key or "ordering_keys" not in broker.features:
        return backend.publish_reliable
    keyed = cast(ReliableWithOrderingKeys, backend)
    return functools.partial(keyed.publish_reliable, ordering_key=ordering_key)


def group(value: str, field: str = "group") -> str:
    """A consumer group (or consumer) name: non-empty, at most 256 bytes."""
    return require_name(value, field, _MAX_GROUP)


def in_flight(value: int) -> int:
    """`max_in_flight` with its default (0: 100) and bounds."""
    if value == 0:
        return DEFAULT_IN_FLIGHT
    if not 1 <= value <= _MAX_IN_FLIGHT:
        raise invalid("max_in_flight", f"must be between 0 and {_MAX_IN_FLIGHT}")
    return value


def ids(values: Sequence[str], field: str, *, required: bool = True) -> list[str]:
    """1 to 1000 message ids (`<ms>-<seq>`, as Publish and Subscribe return them)."""
    if not values and required:
        raise invalid(field, "name at least one id")
    if len(values) > _MAX_IDS:
        raise invalid(field, f"at most {_MAX_IDS} per call")
    for i, value in enumerate(values):
        if not _STREAM_ID.match(value):
            raise invalid(f"{field}[{i}]", f"{value[:64]!r} is not an id like 1700000000000-0")
    return list(values)


def page_token(value: str) -> str | None:
    """The dead-letter id a page starts after (None: the first page)."""
    if value and not _STREAM_ID.match(value):
        raise invalid("page.page_token", "is not a token from a previous page")
    return value or None


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def message(delivered: ReliableMessage) -> pubsub_pb2.PubSubMessage:
    """A delivery of a reliable topic as a `PubSubMessage`."""
    return pubsub_pb2.PubSubMessage(
        channel=delivered.topic,
        payload=delivered.payload,
        metadata=dict(delivered.metadata),
        publish_time=_timestamp(delivered.published_at),
        message_id=delivered.message_id,
        delivery_count=delivered.delivery_count,
    )


def dead_letter(letter: DeadLetter) -> pubsub_pb2.DeadLetter:
    """A dead letter as its proto message."""
    return pubsub_pb2.DeadLetter(
        dead_letter_id=letter.dead_letter_id,
        topic=letter.topic,
        message_id=letter.message_id,
        payload=letter.payload,
        metadata=dict(letter.metadata),
        publish_time=_timestamp(letter.published_at),
        delivery_count=letter.delivery_count,
        group=letter.group,
        consumer=letter.consumer,
        dead_letter_time=_timestamp(letter.dead_lettered_at),
    )
