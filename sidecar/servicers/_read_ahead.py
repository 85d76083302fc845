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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final, TypeVar

__all__ = ["read_ahead"]

T = TypeVar("T")
_END: Final = object()


async def read_ahead(items: AsyncIterator[T], depth: int = 2) -> AsyncIterator[T]:
    """Yield every item of `items`, reading up to `depth` more while each is being used.

    Raises:
        Exception: whatever `items` raised, after the items before it were yielded.
    """
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
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]  # the queue holds T, exceptions and _END
    finally:
        if not reader.done():
            reader.cancel()
        await asyncio.wait((reader,))
        if not reader.cancelled():
            reader.exception()  # retrieved: its outcome was handled above
