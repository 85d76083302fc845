"""`MappedPart` behaves as the file botocore and aiohttp read a part body from, and the part
reader cuts any chunking of the caller's stream into exact parts."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest

from sidecar.backends.objectstore._s3_multipart import PartReader
from sidecar.backends.objectstore._s3_part import MappedPart


def test_a_part_reads_seeks_and_reports_its_length() -> None:
    part = MappedPart(10)
    part.append(b"hello ")
    part.append(memoryview(b"moon"))
    assert isinstance(part, io.BytesIO)  # what makes aiohttp send it from getbuffer()
    assert (len(part), part.tell()) == (10, 0)
    assert part.read(3) == b"hel"
    assert part.read() == b"lo moon"
    assert part.read(5) == b""
    assert part.seek(0, io.SEEK_END) == 10
    part.seek(-4, io.SEEK_END)
    assert part.read(100) == b"moon"
    part.seek(0)
    buffer = bytearray(4)
    assert (part.readinto(buffer), bytes(buffer)) == (4, b"hell")
    with part.getbuffer() as view:
        assert bytes(view) == b"hello moon"
    assert part.getvalue() == b"hello moon"


def test_a_part_refuses_writes_and_closes_once() -> None:
    part = MappedPart(4)
    part.append(b"ab")
    with pytest.raises(io.UnsupportedOperation):
        part.write(b"x")
    view = part.getbuffer()
    part.close()  # a view still out: the map goes when the view does
    view.release()
    part.close()
    assert part.closed
    with pytest.raises(ValueError):
        part.read()


async def _chunks(*sizes: int) -> AsyncIterator[bytes]:
    start = 0
    for size in sizes:
        yield bytes((start + i) % 251 for i in range(size))
        start += size


@pytest.mark.parametrize("sizes", [(10,), (3, 3, 3, 1), (1, 20), (7, 0, 7), ()])
async def test_the_reader_cuts_exact_parts_from_any_chunking(sizes: tuple[int, ...]) -> None:
    total = sum(sizes)
    expected = bytes(i % 251 for i in range(total))
    reader = PartReader(_chunks(*sizes))
    parts: list[bytes] = []
    while await reader.more():
        part = await reader.read_part(4)
        parts.append(part.getvalue())
        part.close()
    assert b"".join(parts) == expected
    assert all(len(p) == 4 for p in parts[:-1])
    assert reader.ended
