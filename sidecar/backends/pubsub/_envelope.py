"""The bytes a message travels as on Redis pub/sub: payload plus metadata and publish time.

Redis carries one opaque string per message, but a `Message` also has metadata and a
publish time that every sidecar subscribed to the channel must see. So the sidecar publishes
an envelope:

    b"\\x00SCM1"                 magic (5 bytes; a NUL first, so it is never text)
    published_at                 IEEE-754 double, big-endian: seconds since the epoch
    entries                      uint16: number of metadata pairs
    (klen uint16, key, vlen uint32, value) * entries     UTF-8 strings
    payload                      the rest, as published

Anything else on the channel (another program publishing raw bytes with redis-cli or its
own client) is delivered as it is: payload = the whole string, empty metadata, stamped with
the time of receipt. Programs that subscribe to Redis directly see the envelope.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["EMPTY_METADATA", "decode", "encode"]

_MAGIC = b"\x00SCM1"
_HEAD = struct.Struct(">dH")
_KEY = struct.Struct(">H")
_VALUE = struct.Struct(">I")
_START = len(_MAGIC) + _HEAD.size

EMPTY_METADATA: Mapping[str, str] = MappingProxyType({})


def encode(payload: bytes, metadata: Mapping[str, str] | None, published_at: float) -> bytes:
    """The envelope of one published message."""
    parts = [_MAGIC, _HEAD.pack(published_at, len(metadata or ()))]
    for key, value in (metadata or {}).items():
        raw_key, raw_value = key.encode(), value.encode()
        parts += (_KEY.pack(len(raw_key)), raw_key, _VALUE.pack(len(raw_value)), raw_value)
    parts.append(payload)
    return b"".join(parts)


def decode(data: bytes, received_at: float) -> tuple[bytes, Mapping[str, str], float]:
    """(payload, read-only metadata, published_at) of what arrived on a channel.

    Data that is not a well-formed envelope is a raw payload from some other publisher.
    """
    if not data.startswith(_MAGIC) or len(data) < _START:
        return data, EMPTY_METADATA, received_at
    try:
        published_at, entries = _HEAD.unpack_from(data, len(_MAGIC))
        offset = _START
        if not entries:
            return data[offset:], EMPTY_METADATA, published_at
        metadata: dict[str, str] = {}
        for _ in range(entries):
            (size,) = _KEY.unpack_from(data, offset)
            offset += _KEY.size
            key = data[offset : offset + size].decode()
            offset += size
            (size,) = _VALUE.unpack_from(data, offset)
            offset += _VALUE.size
            if offset + size > len(data):
                raise ValueError("truncated envelope")
            metadata[key] = data[offset : offset + size].decode()
            offset += size
    except (struct.error, UnicodeDecodeError, ValueError):
        return data, EMPTY_METADATA, received_at
    return data[offset:], MappingProxyType(metadata), published_at
