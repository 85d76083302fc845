"""How a message of a reliable topic is laid out as a Redis stream entry, and back.

An entry has three fields, readable with `redis-cli XRANGE`: `payload` (the bytes),
`metadata` (a JSON object of strings) and `published_at` (milliseconds since the epoch). A
dead letter adds the `dead.*` fields the CLAIM script writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sidecar.backends.pubsub.reliable import DeadLetter, ReliableMessage

__all__ = [
    "dead_letter",
    "encode",
    "message",
    "text",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


def text(value: Any) -> str:
    """A reply item as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def encode(payload: bytes, metadata: Mapping[str, str] | None, published_ms: int) -> dict[Any, Any]:
    """The fields of the stream entry for one published message."""
    return {
        "payload": bytes(payload),
        "metadata": json.dumps(dict(metadata or {}), separators=(",", ":")),
        "published_at": str(published_ms),
    }


def _fields(raw: Any) -> dict[str, Any]:
    """Entry fields as a dict keyed by text, from a flat [k, v, ...] list or a mapping."""
    if isinstance(raw, Mapping):
        return {text(key): value for key, value in raw.items()}
    items = list(raw)
    return {text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _metadata(value: Any) -> Mapping[str, str]:
    if value is None:
        return _EMPTY
    decoded = json.loads(text(value))
    return MappingProxyType({str(k): str(v) for k, v in decoded.items()}) if decoded else _EMPTY


def _payload(value: Any) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else str(value).encode()


def _seconds(value: Any) -> float:
    return int(text(value)) / 1000 if value is not None else 0.0


def message(topic: str, entry_id: Any, raw_fields: Any, delivery_count: int) -> ReliableMessage:
    """One delivery of the stream entry `entry_id` of `topic`."""
    fields = _fields(raw_fields)
    return ReliableMessage(
        topic=topic,
        message_id=text(entry_id),
        payload=_payload(fields.get("payload")),
        metadata=_metadata(fields.get("metadata")),
        published_at=_seconds(fields.get("published_at")),
        delivery_count=delivery_count,
    )


def dead_letter(topic: str, entry_id: Any, raw_fields: Any) -> DeadLetter:
    """The dead letter stored as entry `entry_id` of the dead-letter stream of `topic`."""
    fields = _fields(raw_fields)
    return DeadLetter(
        dead_letter_id=text(entry_id),
        topic=topic,
        message_id=text(fields.get("dead.message_id", "")),
        payload=_payload(fields.get("payload")),
        metadata=_metadata(fields.get("metadata")),
        published_at=_seconds(fields.get("published_at")),
        delivery_count=int(text(fields.get("dead.delivery_count", "0"))),
        group=text(fields.get("dead.group", "")),
        consumer=text(fields.get("dead.consumer", "")),
        dead_lettered_at=_seconds(fields.get("dead.at_ms")),
    )
