"""`StreamConsumer`: one consumer of a group, as a `ReliableSubscription`.

Its iteration is one loop that, in this order of priority:

1. every `interval` (a quarter of the visibility timeout, 50 ms to 5 s) does maintenance:
   takes over other consumers' messages idle past the visibility timeout if it has room,
   delivers again its own idle ones (two intervals later, so that another consumer with room
   gets them first), dead-letters those delivered `max_deliveries` times already, and forgets
   in-flight messages no longer pending to it (acknowledged elsewhere, or taken over);
2. while it has room (fewer than `max_in_flight` unacknowledged), first takes back its own
   pending messages from an earlier session (page by page, from the oldest), then reads new
   messages with a blocking XREADGROUP that never outlasts the next maintenance;
3. without room, waits for an acknowledgement (`settle`) or the next maintenance.

Closing wakes the loop, cancels a blocking read in progress and ends the iteration; whatever
was delivered and not acknowledged stays pending in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from sidecar.backends.pubsub._streams_ops import StreamOps
from sidecar.backends.pubsub.reliable import ReliableMessage, ReliableSubscription

__all__ = ["StreamConsumer"]

T = TypeVar("T")
_MIN_INTERVAL = 0.05
_MAX_INTERVAL = 5.0


def _outcome_seen(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned step's error as retrieved (nobody awaits it any more)."""
    if not task.cancelled():
        task.exception()


def _order(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


class StreamConsumer(ReliableSubscription):
    """A consumer named `consumer` in `group` on `topics`; see the module docstring.

    Args:
        ops: the Redis commands.
        topics: the topics it reads (their groups already exist).
        group, consumer: who it is.
        max_in_flight: most delivered and unacknowledged messages at a time (>= 1).
        visibility_timeout: seconds a delivered message may stay unacknowledged.
        on_close: called once when it closes (the backend forgets it).
        leave_on_close: remove the consumer from the group on close if it holds nothing
            (for generated names, which nobody will reuse).
    """

    def __init__(
        self,
        ops: StreamOps,
        topics: Sequence[str],
        group: str,
        consumer: str,
        *,
        max_in_flight: int,
        visibility_timeout: float,
        on_close: Callable[[StreamConsumer], None],
        leave_on_close: bool = False,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.topics = tuple(dict.fromkeys(topics))
        self.group = group
        self._ops = ops
        self._consumer = consumer
        self._max_in_flight = max_in_flight
        self._interval = min(max(visibility_timeout / 4, _MIN_INTERVAL), _MAX_INTERVAL)
        self._min_idle_ms = max(1, round(visibility_timeout * 1000))
        # Its own overdue messages it takes back two checks later than others may, so a
        # consumer of the group with room gets them first (the holder may be stuck on them).
        self._own_idle_ms = self._min_idle_ms + round(2 * self._interval * 1000)
        self._on_close = on_close
        self._leave_on_close = leave_on_close
        self._in_flight: dict[str, set[str]] = {topic: set() for topic in self.topics}
        # Topics whose pending messages from an earlier session are still to be taken back,
        # and where the next page starts.
        self._backlog = list(self.topics)
        self._backlog_start = "-"
        self._rotation = 0
        self._wake = asyncio.Event()  # an acknowledgement made room
        self._closing = asyncio.Event()
        self._closed = False

    @property
    def consumer(self) -> str:
        return self._consumer

    @property
    def in_flight(self) -> int:
        """Messages delivered and not yet acknowledged (as far as this consumer knows)."""
        return sum(len(ids) for ids in self._in_flight.values())

    def settle(self, topic: str, message_ids: Iterable[str]) -> None:
        """Forget acknowledged messages, making room for more."""
        held = self._in_flight.get(topic)
        if held is not None:
            held.difference_update(message_ids)
            self._wake.set()

    def __aiter__(self) -> AsyncIterator[ReliableMessage]:
        return self._messages()

    async def close(self) -> None:
        if self._closed:
            return
        self._close_now()
        if self._leave_on_close:
            for topic in self.topics:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._ops.leave(topic, self.group, self._consumer), 2)

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._on_close(self)

    async def _messages(self) -> AsyncIterator[ReliableMessage]:
        try:
            next_maintenance = time.monotonic() + self._interval
            while not self._closed:
                if time.monotonic() >= next_maintenance:
                    batch = await self._until_closed(self._maintain())
                    next_maintenance = time.monotonic() + self._interval
                else:
                    wait = next_maintenance - time.monotonic()
                    batch = await self._until_closed(self._fill(wait))
                for message in batch or ():
                    if self._closed:
                        return
                    self._in_flight[message.topic].add(message.message_id)
                    yield message
        finally:
            # Runs on cancellation of the reading task, on aclose() and at the end: the
            # consumer never outlives its reader. Unacknowledged messages stay pending.
            self._close_now()

    async def _until_closed(self, step: Awaitable[T]) -> T | None:
        """Run `step`, or cancel it and return None as soon as the consumer closes (or the
        reading task is cancelled: then the cancellation propagates).

        A cancelled step is not waited for: redis-py may swallow the cancellation of a
        blocking XREADGROUP and finish the read first (up to one maintenance interval, 5 s
        at most), and the consumer must not outlive its reader that long. Whatever such a
        read takes stays pending in Redis and is delivered again after the visibility
        timeout, as after a crash.
        """
        task = asyncio.ensure_future(step)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not task.done():
                task.cancel()
                task.add_done_callback(_outcome_seen)
        return task.result() if task.done() and not task.cancelled() else None

    def _room(self) -> int:
        return max(0, self._max_in_flight - self.in_flight)

    async def _fill(self, wait: float) -> list[ReliableMessage]:
        """Take back own pending messages, or read new ones, or wait for room."""
        room = self._room()
        if room == 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.0))
            return []
        if self._backlog:
            return await self._take_back(room)
        topics = self._rotated(min(room, len(self.topics)))
        return await self._ops.read_new(
            topics,
            self.group,
            self._consumer,
            count=room // len(topics),
            block_ms=max(1, int(wait * 1000)),
        )

    async def _take_back(self, room: int) -> list[ReliableMessage]:
        """One page of this consumer's pending messages from an earlier session."""
        topic = self._backlog[0]
        claimed = await self._ops.claim(
            topic,
            self.group,
            self._consumer,
            min_idle_ms=0,
            start=self._backlog_start,
            scan=room,
            room=0,
            owner_only=True,
        )
        if claimed.scanned < room:
            self._backlog.pop(0)
            self._backlog_start = "-"
        else:
            self._backlog_start = "(" + claimed.last_id
        return list(claimed.messages)

    def _rotated(self, count: int) -> list[str]:
        """`count` topics, starting with a different one each time, so none starves."""
        start = self._rotation % len(self.topics)
        self._rotation += 1
        ordered = self.topics[start:] + self.topics[:start]
        return list(ordered[:count])

    async def _maintain(self) -> list[ReliableMessage]:
        """Redeliver own idle messages, take over others' idle ones, forget settled ones."""
        delivered: list[ReliableMessage] = []
        for topic in self.topics:
            stop = self._taken_back_up_to(topic)
            if stop is None:
                continue
            own = await self._ops.claim(
                topic,
                self.group,
                self._consumer,
                min_idle_ms=self._own_idle_ms,
                end=stop,
                scan=self._max_in_flight,
                room=0,
                owner_only=True,
            )
            delivered.extend(own.messages)
        for topic in self.topics if not self._backlog else ():
            new = sum(1 for m in delivered if m.message_id not in self._in_flight[m.topic])
            room = self._room() - new
            if room <= 0:
                break
            others = await self._ops.claim(
                topic,
                self.group,
                self._consumer,
                min_idle_ms=self._min_idle_ms,
                scan=room,
                room=room,
                owner_only=False,
            )
            delivered.extend(others.messages)
        await self._forget_settled()
        return delivered

    def _taken_back_up_to(self, topic: str) -> str | None:
        """The last own pending id of `topic` already taken back ("+": all; None: none).

        Own messages beyond it are from an earlier session and not yet in flight: the
        backlog takes them back within the in-flight limit, so maintenance leaves them be.
        """
        if topic not in self._backlog:
            return "+"
        if topic != self._backlog[0] or self._backlog_start == "-":
            return None
        return self._backlog_start[1:]

    async def _forget_settled(self) -> None:
        """Drop in-flight ids no longer pending to this consumer."""
        for topic, held in self._in_flight.items():
            if not held:
                continue
            ordered = sorted(held, key=_order)
            still = await self._ops.held(
                topic, self.group, self._consumer, ordered[0], ordered[-1], len(ordered)
            )
            held.intersection_update(still)
        self._wake.set()
