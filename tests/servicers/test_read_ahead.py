"""`read_ahead`: the upstream is read while the caller takes an item, never more than
`depth` items ahead, errors arrive after the items before them, and stopping early closes
the upstream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from sidecar.servicers._read_ahead import read_ahead


class Source:
    """An upstream of numbered items that records how far it was read and whether it closed."""

    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.read = 0
        self.closed = False

    async def items(self) -> AsyncIterator[int]:
        try:
            for number in range(self.count):
                if number == self.fail_after:
                    raise ConnectionResetError("upstream cut")
                self.read += 1
                yield number
                await asyncio.sleep(0)
        finally:
            self.closed = True


async def test_the_next_items_are_read_while_the_caller_is_busy_but_at_most_depth_ahead() -> None:
    source = Source(10)
    reader = read_ahead(source.items(), depth=2)
    first = await anext(reader)
    for _ in range(20):  # the caller is busy writing `first`: the reader task runs meanwhile
        await asyncio.sleep(0)
    # `first`, two queued and one more held by the reader task waiting for room.
    assert first == 0 and source.read == 4
    assert [item async for item in reader] == list(range(1, 10))
    assert source.closed


async def test_an_upstream_error_comes_after_the_items_before_it() -> None:
    source = Source(10, fail_after=3)
    received: list[int] = []
    with pytest.raises(ConnectionResetError):
        async for item in read_ahead(source.items()):
            received.append(item)
    assert received == [0, 1, 2] and source.closed


async def test_a_caller_that_stops_early_closes_the_upstream() -> None:
    source = Source(1000)
    reader = read_ahead(source.items())
    async with contextlib.aclosing(reader):  # type: ignore[type-var]
        assert await anext(reader) == 0
    assert source.closed and source.read < 10
