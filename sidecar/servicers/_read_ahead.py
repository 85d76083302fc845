"""`read_ahead`: read the next items of an upstream stream while the caller takes this one.

A download relayed item by item waits for the upstream read and then for the caller's write,
one after the other; over a real network the two take similar time, so doing them in turn
nearly halves throughput. Here a reader task keeps at most `depth` items read ahead in a
bounded queue while the writer sends: memory stays bounded (`depth` items), and a slow caller
still stops the upstream reads through the full queue.

Whatever ends the iteration (its end, an upstream error, the caller going away), the reader
task is cancelled and `items` (a generator) closed before the generator finishes.

    async for chunk in read_ahead(download.chunks(), depth=2):
        await context.write(...)

`read_ahead_batches` yields instead every item already read, as one list: a writer that sends
many items per message (a batching subscriber) takes all that waited while it was sending,
and an item that arrives alone is passed on at once, never held back for a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final, TypeVar

__all__ = ["read_ahead", "read_ahead_batches"]

T = TypeVar("T")
_END: Final = object()
_NEXT: Final = object()  # no item in hand: wait for the next one


async def read_ahead(items: AsyncIterator[T], depth: int = 2) -> AsyncIterator[T]:
    """Yield every item of `items`, reading up to `depth` more while each is being used.

    Raises:
        Exception: whatever `items` raised, after the items before it were yielded.
    """
    async with contextlib.aclosing(_read(items, depth, 1)) as batches:
        async for (item,) in batches:
            yield item


def read_ahead_batches(items: AsyncIterator[T], depth: int) -> AsyncGenerator[list[T], None]:
    """Yield the items of `items` as lists of those already read, at most `depth` each,
    reading up to `depth` more while each list is being used. Waits only when none is read.

    Raises:
        Exception: whatever `items` raised, after the items before it were yielded.
    """
    return _read(items, depth, depth)


async def _read(items: AsyncIterator[T], depth: int, most: int) -> AsyncGenerator[list[T], None]:
    """The items of `items`, read ahead by a task into a queue of `depth`, yielded as lists
    of at most `most` of those already read."""
    queue: asyncio.Queue[object] = asyncio.Queue(depth)

    async def pump() -> None:
        try:
            async for item in items:
                await queue.put(item)
        except Exception as exc:  # handed to the consumer, after what came before it
            await queue.put(exc)
            return
        finally:
            close = getattr(items, "aclose", None)  # a generator: run its cleanup now
            if close is not None:
                await close()
        await queue.put(_END)

    reader = asyncio.create_task(pump())
    try:
        item = await queue.get()
        while item is not _END:
            if isinstance(item, Exception):
                raise item
            batch, item = [item], _NEXT
            # The end or an error stops the list; it is seen once the list is used.
            while len(batch) < most and not queue.empty():
                taken = queue.get_nowait()
                if taken is _END or isinstance(taken, Exception):
                    item = taken
                    break
                batch.append(taken)
            yield batch  # type: ignore[misc]  # the queue holds T, exceptions and _END
            if item is _NEXT:
                item = await queue.get()
    finally:
        if not reader.done():
            reader.cancel()
        await asyncio.wait((reader,))
        if not reader.cancelled():
            reader.exception()  # retrieved: its outcome was handled above
