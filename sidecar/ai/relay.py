"""`relay`: hand a stream's batches to a slower consumer, merging what piles up meanwhile.

Each gRPC message written costs ~100 µs of server CPU whatever it carries, and upstreams
send one HTTP chunk per token, so writing one message per upstream chunk makes the gRPC
write the ceiling. Here the first batch is read and sent directly (nothing stands between
the first token and the caller); then a reader task pulls batches from the route into a
bounded queue while the writer sends, and when the writer comes back, everything that
arrived during its last write goes out as one merged batch. An idle writer sends each
batch at once; a busy one sends fewer, fuller messages. The reader gives the loop a turn
when the writer waits for it, and at least every half millisecond, so a finished write is
noticed promptly even while the upstream's backlog is being parsed.

The queue is bounded (`max_pending` batches): when the caller reads slowly, the writer
waits on gRPC flow control, the queue fills, the reader stops reading, and the upstream's
socket fills in turn, so memory stays bounded however slow the caller is.

Whatever ends the relay (the end of the stream, an upstream error, the caller cancelling,
the deadline), the reader task is cancelled and the route's stream closed before `relay`
returns, which closes the upstream response.

Usage:

    await relay(stream_chat(route, request, deadline, call, metrics), write_batch)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Final

from sidecar.backends.ai.base import ChatEvent

__all__ = ["relay"]

_MAX_MERGED_TEXT: Final = 64 * 1024
"""Characters of text merged into one batch at most (messages stay far below 4 MiB)."""
_TURN: Final = 0.0005
"""Seconds the reader may keep the loop while the writer is busy."""
_END: Final = object()


async def relay(
    batches: AsyncGenerator[list[ChatEvent], None],
    send: Callable[[list[ChatEvent]], Awaitable[None]],
    *,
    coalesce: Callable[[], bool] = lambda: True,
    max_pending: int = 256,
) -> None:
    """Send every batch of `batches` through `send`, merged while `send` is busy.

    Args:
        batches: The route's stream (closed here, whatever happens).
        send: Writes one batch to the caller.
        coalesce: Asked before merging; False keeps every batch as it came.
        max_pending: Batches queued at most between the reader and the writer.

    Raises:
        Exception: Whatever `batches` raised, after the batches before it were sent.
    """
    queue: asyncio.Queue[object] = asyncio.Queue(max_pending)
    writer_waiting = False

    async def pump() -> None:
        turn = time.perf_counter() + _TURN
        async with contextlib.aclosing(batches):
            try:
                async for batch in batches:
                    idle_writer = writer_waiting
                    await queue.put(batch)
                    # With a backlog in the socket neither the put nor the next read
                    # suspends. Give the loop a turn when the writer was waiting (send
                    # this batch now: latency) and at least every `_TURN` seconds (so a
                    # finished write is noticed); in between keep reading, which is what
                    # lets batches pile up and go out merged.
                    if idle_writer or time.perf_counter() > turn:
                        await asyncio.sleep(0)
                        turn = time.perf_counter() + _TURN
            except Exception as exc:  # handed to the writer, after what came before it
                await queue.put(exc)
                return
        await queue.put(_END)

    # The first batch is read and sent right here, without the reader task: no task start
    # or queue hop stands between the first token and the caller.
    try:
        first = await anext(batches, None)
        if first is None:
            return
        await send(first)
    except BaseException:
        await batches.aclose()
        raise
    reader = asyncio.create_task(pump())
    try:
        pending: object = None
        item: object
        while True:
            if pending is None:
                writer_waiting = True
                item = await queue.get()
                writer_waiting = False
            else:
                item, pending = pending, None
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            batch: list[ChatEvent] = item  # type: ignore[assignment]
            if not queue.empty() and coalesce():
                batch, pending = _merge(batch, queue)
            await send(batch)
    finally:
        if not reader.done():
            reader.cancel()
        await asyncio.wait((reader,))
        if not reader.cancelled():
            reader.exception()  # retrieved: the reader's outcome was handled above


def _merge(first: list[ChatEvent], queue: asyncio.Queue[object]) -> tuple[list[ChatEvent], object]:
    """`first` plus the batches already queued behind it, up to the text limit; returns the
    merged batch and a queued end or error met on the way (None if none)."""
    merged = list(first)
    size = sum(len(event) for event in first if isinstance(event, str))
    while size < _MAX_MERGED_TEXT and not queue.empty():
        item = queue.get_nowait()
        if not isinstance(item, list):
            return merged, item
        merged.extend(item)
        size += sum(len(event) for event in item if isinstance(event, str))
    return merged, None
