"""`BufferedSubscription`: the one `Subscription` implementation every broker shares.

A broker decides *which* subscriptions a message reaches; this class decides what happens
then, identically for every backend: the message joins a bounded buffer (a deque plus an
`asyncio.Event` waking the reader), a full buffer drops its oldest message and counts it, and
the reader gets `Dropped(count)` before the newer messages. So a slow reader costs at most
`buffer_size` messages of memory, whatever the backend. A `Gap` (the broker link was lost,
or is back) takes its place in order among the messages and is never dropped.

A *paced* subscription (made for a subscriber that granted a credit, on a broker that can hold
messages) is never dropped from: its broker asks `has_room` before delivering and waits on
`room` while it is full, so the reader paces the publishers instead (`MemoryBroker`).

A broker registers the subscription in its own tables and passes `on_close`, which must
unregister it synchronously: `on_close` runs from the iterator's `finally`, where awaiting
is not safe during cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from sidecar.backends.pubsub.base import (
    Dropped,
    Gap,
    GlobPattern,
    Message,
    Subscription,
    SubscriptionEvent,
)

__all__ = ["BufferedSubscription"]


class BufferedSubscription(Subscription):
    """A subscription with a bounded buffer; see the module docstring.

    Args:
        channels: the exact channels subscribed, without repeats.
        patterns: the compiled glob patterns subscribed, without repeats.
        buffer_size: messages held before the oldest is dropped (>= 1).
        on_close: called once, synchronously, when the subscription closes.
        paced: its broker waits for `room` instead of overfilling it (nothing is dropped).
    """

    def __init__(
        self,
        channels: tuple[str, ...],
        patterns: tuple[GlobPattern, ...],
        buffer_size: int,
        on_close: Callable[[BufferedSubscription], None],
        *,
        paced: bool = False,
    ) -> None:
        self.channels = channels
        self.patterns = patterns
        self._buffer_size = buffer_size
        self._on_close = on_close
        self._buffer: deque[Message | Gap] = deque()
        self._messages = 0  # in the buffer: gaps do not count against buffer_size
        self._unreported_drops = 0
        self._dropped_total = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        # Set whenever the reader takes a message from a full buffer (paced only).
        self._space: asyncio.Event | None = asyncio.Event() if paced else None

    @property
    def paced(self) -> bool:
        """Whether its broker paces publishers to it rather than dropping (see `room`)."""
        return self._space is not None

    def has_room(self, count: int = 1) -> bool:
        """Whether `count` deliveries would drop nothing now (a closed subscription takes
        nothing; more than `buffer_size` at once fit once the buffer is empty)."""
        wanted = min(count, self._buffer_size)
        return self._closed or self._messages + wanted <= self._buffer_size

    async def room(self, count: int = 1) -> None:
        """Wait until `has_room(count)` (a paced subscription; others never need to wait)."""
        space = self._space
        while space is not None and not self.has_room(count):
            space.clear()
            await space.wait()

    @property
    def dropped_total(self) -> int:
        return self._dropped_total

    @property
    def closed(self) -> bool:
        """Whether the subscription was closed (it then receives nothing more)."""
        return self._closed

    def buffered(self) -> int:
        """Messages waiting to be read (for tests: it never exceeds the buffer size)."""
        return self._messages

    def __aiter__(self) -> AsyncIterator[SubscriptionEvent]:
        return self._events()

    def batches(self, most: int) -> AsyncGenerator[list[SubscriptionEvent], None]:
        return self._batches(most)

    async def _events(self) -> AsyncIterator[SubscriptionEvent]:
        async with contextlib.aclosing(self._batches(1)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def _batches(self, most: int) -> AsyncGenerator[list[SubscriptionEvent], None]:
        try:
            while True:
                if self._unreported_drops or self._buffer:
                    yield self._take(most)
                elif self._closed:
                    return
                else:
                    self._wakeup.clear()
                    await self._wakeup.wait()
        finally:
            # Runs on cancellation of the reading task (CancelledError propagates on after
            # it), on aclose() of this iterator, and when it ends: the subscription never
            # outlives its reader.
            self.close_now()

    def _take(self, most: int) -> list[SubscriptionEvent]:
        """What waits now, oldest first: `Dropped` for the drops not yet reported, then up
        to `most` messages with the gaps among them."""
        taken: list[SubscriptionEvent] = []
        if self._unreported_drops:
            taken.append(Dropped(self._unreported_drops))
            self._unreported_drops = 0
        buffer, messages = self._buffer, 0
        while buffer and messages < most:
            event = buffer.popleft()
            messages += isinstance(event, Message)
            taken.append(event)
        self._messages -= messages
        if messages and self._space is not None:
            self._space.set()
        return taken

    async def close(self) -> None:
        self.close_now()

    def deliver(self, message: Message) -> None:
        """Buffer `message` for the reader, dropping the oldest one if the buffer is full."""
        if self._closed:
            return
        if self._messages >= self._buffer_size:
            self._drop_oldest_message()
            self._unreported_drops += 1
            self._dropped_total += 1
        else:
            self._messages += 1
        self._buffer.append(message)
        self._wakeup.set()

    def gap(self, event: Gap) -> None:
        """Tell the reader the broker link was lost (or is back), in order with messages."""
        if not self._closed:
            self._buffer.append(event)
            self._wakeup.set()

    def _drop_oldest_message(self) -> None:
        buffer = self._buffer
        if isinstance(buffer[0], Message):
            buffer.popleft()
            return
        for index, event in enumerate(buffer):  # rare: a gap is waiting at the front
            if isinstance(event, Message):
                del buffer[index]
                return

    def close_now(self) -> None:
        """Close synchronously: unregister, discard the buffer, end the iteration."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._messages = 0
        self._unreported_drops = 0
        self._on_close(self)
        self._wakeup.set()
        if self._space is not None:
            self._space.set()  # a publisher waiting for room goes on
