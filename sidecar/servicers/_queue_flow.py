"""Flow control of QueueService.Receive: each stream holds at most `max_in_flight` delivered
messages, and fetches more only when some leave its window.

A message leaves the window of the stream that delivered it when an Ack or a
ChangeVisibility to 0 names its receipt handle (on any stream's connection to this sidecar),
or when its visibility timeout runs out (the queue may then deliver it again, so it is no
longer this stream's to hold). A ChangeVisibility to a longer timeout keeps it in the window
for that long. Acks sent to another replica of the sidecar free the slot only at the
visibility timeout.

`Windows` is shared by the servicer's calls: it finds the window of a receipt handle. Time
is the integrations' clock, so tests move a `FakeClock`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from sidecar.resilience import Clock

__all__ = ["Stopped", "Window", "Windows"]

T = TypeVar("T")


class Stopped(Exception):
    """The stream was told to end (the server is shutting down)."""


class Window:
    """The delivered, unacknowledged messages of one Receive stream."""

    def __init__(self, limit: int, clock: Clock, owner: Windows) -> None:
        self.limit = limit
        self._clock = clock
        self._owner = owner
        self._until: dict[str, float] = {}
        """Receipt handle -> when its visibility timeout runs out (clock seconds)."""
        self._changed = asyncio.Event()
        self._fetch: asyncio.Task[Any] | None = None
        self.stopped = False

    def room(self) -> int:
        """How many more messages the stream may deliver now."""
        now = self._clock.monotonic()
        for handle in [h for h, until in self._until.items() if until <= now]:
            self._forget(handle)
        return max(self.limit - len(self._until), 0)

    def __len__(self) -> int:
        return len(self._until)

    def add(self, handle: str, visible_for: float) -> None:
        self._until[handle] = self._clock.monotonic() + visible_for
        self._owner.track(handle, self)

    def release(self, handle: str) -> None:
        """The message was acked or released: its slot is free."""
        self._forget(handle)
        self._changed.set()

    def extend(self, handle: str, seconds: float) -> None:
        """Its visibility timeout now runs out `seconds` from now."""
        if handle in self._until:
            self._until[handle] = self._clock.monotonic() + seconds
            self._changed.set()

    async def wait_for_room(self) -> None:
        """Until the window has room (or the stream is stopped: raises Stopped)."""
        while not self.stopped and self.room() == 0:
            self._changed.clear()
            next_expiry = min(self._until.values()) - self._clock.monotonic()
            await _first_of(self._changed.wait(), self._clock.sleep(max(next_expiry, 0.0)))
        if self.stopped:
            raise Stopped

    async def fetch(self, operation: Awaitable[T]) -> T:
        """Run one fetch such that `stop` can cancel it (raises Stopped then)."""
        if self.stopped:
            raise Stopped
        task: asyncio.Task[T] = asyncio.ensure_future(operation)
        self._fetch = task
        try:
            return await task
        except asyncio.CancelledError:
            if self.stopped and not _current_cancelling():
                raise Stopped from None
            raise
        finally:
            self._fetch = None
            if not task.done():
                task.cancel()

    def stop(self) -> None:
        """End the stream: its fetch is cancelled and it delivers nothing more."""
        self.stopped = True
        self._changed.set()
        if self._fetch is not None:
            self._fetch.cancel()

    def close(self) -> None:
        for handle in list(self._until):
            self._forget(handle)

    def _forget(self, handle: str) -> None:
        if self._until.pop(handle, None) is not None:
            self._owner.untrack(handle)


class Windows:
    """Every open Receive window, and which one holds each receipt handle."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._open: set[Window] = set()
        self._by_handle: dict[str, Window] = {}

    def open(self, limit: int) -> Window:
        window = Window(limit, self._clock, self)
        self._open.add(window)
        return window

    def close(self, window: Window) -> None:
        window.close()
        self._open.discard(window)

    def track(self, handle: str, window: Window) -> None:
        self._by_handle[handle] = window

    def untrack(self, handle: str) -> None:
        self._by_handle.pop(handle, None)

    def released(self, handles: Iterable[str]) -> None:
        """These messages were acked or released."""
        for handle in handles:
            window = self._by_handle.get(handle)
            if window is not None:
                window.release(handle)

    def extended(self, handle: str, seconds: float) -> None:
        window = self._by_handle.get(handle)
        if window is not None:
            window.extend(handle, seconds)

    def stop_all(self) -> None:
        for window in list(self._open):
            window.stop()

    def __len__(self) -> int:
        return len(self._open)


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


async def _first_of(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
