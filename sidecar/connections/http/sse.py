"""A cheap incremental Server-Sent Events decoder working on raw bytes.

The `openai` SDK builds a pydantic object per streamed chunk (~100-250 µs each); the sidecar
only needs each event's data (JSON, for the AI providers), so it splits the byte stream
itself and hands `bytes` on. The common event (`data: {...}` on one line) takes one
`startswith` and one slice; the full grammar (comments, `event:`, multi-line `data:`, CR /
CRLF line ends split across reads) is handled on a slower path.

The buffer is bounded: an upstream that never ends an event cannot make the sidecar hold
more than `max_event_size` bytes.

Usage:

    decoder = SSEDecoder()
    async for data in response.aiter_bytes():
        for event, payload in decoder.feed(data):
            ...   # event is b"" for unnamed events; payload is the joined data lines
"""

from __future__ import annotations

from typing import Final

__all__ = ["SSEDecoder", "SSEError"]

_DATA: Final = b"data: "
_MAX_EVENT: Final = 8 * 1024 * 1024


class SSEError(ValueError):
    """The event stream is malformed or an event exceeds the size limit."""


class SSEDecoder:
    """Turns network reads into `(event name, data)` pairs.

    Args:
        max_event_size: Largest event accepted, in bytes.
    """

    __slots__ = ("_buffer", "_max", "_pending_cr")

    def __init__(self, max_event_size: int = _MAX_EVENT) -> None:
        self._buffer = b""
        self._pending_cr = False
        self._max = max_event_size

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Decode one read; returns the events it completed, in order.

        Raises:
            SSEError: An event grew past `max_event_size`.
        """
        if self._pending_cr:
            self._pending_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            # A CR at the end may be half of a CRLF split across reads: it already ends the
            # line, so a LF opening the next read must not end another one.
            self._pending_cr = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + data if self._buffer else data
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop()
        if len(self._buffer) > self._max:
            raise SSEError(f"event larger than {self._max} bytes")
        events: list[tuple[bytes, bytes]] = []
        for block in blocks:
            if block.startswith(_DATA) and b"\n" not in block:
                events.append((b"", block[6:]))
            elif block:
                event = _parse_block(block)
                if event is not None:
                    events.append(event)
        return events

    @property
    def pending(self) -> bool:
        """Whether a partial event is buffered (the stream ended in the middle of one)."""
        return bool(self._buffer.strip())


def _parse_block(block: bytes) -> tuple[bytes, bytes] | None:
    name = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue  # blank line inside a block, or a comment (keep-alive)
        key, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if key == b"data":
            data.append(value)
        elif key == b"event":
            name = value
    if not data:
        return None  # an event without data is not dispatched (per the SSE spec)
    return name, b"\n".join(data)
