"""The byte-level SSE decoder: events split anywhere across reads decode the same."""

from __future__ import annotations

import pytest

from sidecar.connections.http.sse import SSEDecoder, SSEError

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a": 1}\n\n'
    b'event: content_block_delta\ndata: {"b": 2}\n\n'
    b"data:first\ndata: second\n\n"
    b"event: empty\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    (b"", b'{"a": 1}'),
    (b"content_block_delta", b'{"b": 2}'),
    (b"", b"first\nsecond"),
    (b"", b"[DONE]"),
]


def _decode(reads: list[bytes]) -> list[tuple[bytes, bytes]]:
    decoder = SSEDecoder()
    return [event for read in reads for event in decoder.feed(read)]


def test_whole_stream_in_one_read() -> None:
    assert _decode([STREAM]) == EXPECTED


def test_every_split_point_gives_the_same_events() -> None:
    for cut in range(1, len(STREAM)):
        assert _decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_ends_even_split_between_reads(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for cut in range(1, len(stream)):
        assert _decode([stream[:cut], stream[cut:]]) == EXPECTED, cut


def test_byte_by_byte() -> None:
    assert _decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_an_unfinished_event_stays_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"partial"') == []
    assert decoder.pending


def test_an_event_over_the_size_limit_is_an_error() -> None:
    decoder = SSEDecoder(max_event_size=16)
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"x" * 32)
