"""`MemoryQueue`: one queue inside this process, with SQS's delivery semantics.

A received message is invisible until it is acked or its visibility timeout runs out; then
it is visible again and its old receipt handle is dead (RECEIPT_INVALID), and the next
receive delivers it with `receive_count` one higher. A message already received
`max_receive_count` times moves to the linked dead-letter queue instead of being delivered.
FIFO: each message group is delivered in order, and a group whose messages are in flight
gives no other message until they are acked or visible again (one receive may take several
consecutive messages of one group, as SQS does); a deduplication id seen within 5 minutes
is accepted and not enqueued again.

All time is the injected clock's (`BuildContext.clock`): delays, visibility timeouts,
retention, the deduplication window and long polling, so tests move a `FakeClock` instead of
sleeping. Nothing here blocks: every operation is a few dict and heap steps, and a long poll
parks on the clock or on the queue's change event.

Bookkeeping: `_ready` (standard queues) is a heap of visible messages by send order;
`_groups` (FIFO) a deque per group and `_ready_groups` a heap of groups whose head may be
delivered; `_pending` a heap of messages waiting to become visible (delayed or in flight).
Heap entries are checked when popped (a stale one is skipped), so nothing is ever searched.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sidecar.backends.queue.base import (
    DEAD_LETTER,
    FIFO,
    MAX_BATCH,
    MAX_DELAY,
    AckOutcome,
    OutgoingMessage,
    ReceivedMessage,
    SendOutcome,
    Sent,
)
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config.services.queue import QueueServiceConfig
from sidecar.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)
from sidecar.resilience import SYSTEM_CLOCK, Clock

__all__ = ["SPEC", "MemoryQueue", "link_dead_letters"]

DEDUPLICATION_WINDOW: Final = 300.0
"""Seconds a FIFO deduplication id is remembered (SQS's 5 minutes)."""


@dataclass(slots=True, eq=False)
class _Stored:
    message_id: str
    body: bytes
    attributes: Mapping[str, str]
    group_id: str
    order: int
    """Send order in this queue (FIFO: the sequence number)."""
    sent_at: float
    """Wall-clock seconds of the first send."""
    expires_at: float
    visible_at: float
    receive_count: int = 0
    receipt: str | None = None
    """The receipt handle of the delivery in flight; None while not in flight."""
    version: int = 0
    """Bumped on every change of visibility, so stale `_pending` entries are skipped."""


class MemoryQueue:
    """A `QueueBackend` in this process.

    Args:
        name: the service's name (`target` in errors).
        clock: where every duration is measured.
        fifo: a FIFO queue.
        content_based_deduplication: FIFO: no deduplication id means the body's SHA-256.
        visibility_timeout: seconds a received message stays invisible by default.
        max_receive_count: receives after which a message moves to the dead-letter queue
            (with `dead_letter`, linked by `link_dead_letters`).
        dead_letter: the name of the dead-letter queue's service.
        max_messages: most messages held; a send beyond fails with RESOURCE_EXHAUSTED.
        message_retention: seconds after its send at which a message is deleted.

    Usage:

        queue = MemoryQueue("jobs", clock=FakeClock())
        await queue.send(OutgoingMessage(b"work"))
        [message] = await queue.receive(1, wait=0, visibility_timeout=None)
        await queue.ack([message.receipt_handle])
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        fifo: bool = False,
        content_based_deduplication: bool = False,
        visibility_timeout: float = 30.0,
        max_receive_count: int | None = None,
        dead_letter: str | None = None,
        max_messages: int = 100_000,
        message_retention: float = 4 * 24 * 3600.0,
    ) -> None:
        self.name = name
        self.dead_letter_name = dead_letter
        self._clock = clock
        self._fifo = fifo
        self._content_dedup = content_based_deduplication
        self._visibility_timeout = visibility_timeout
        self._max_receive_count = max_receive_count
        self._max_messages = max_messages
        self._retention = message_retention
        self._dead_letter: MemoryQueue | None = None
        self._messages: dict[str, _Stored] = {}
        self._ready: list[tuple[int, str]] = []
        self._groups: dict[str, deque[_Stored]] = {}
        self._in_flight_by_group: dict[str, int] = {}
        self._ready_groups: list[tuple[int, str]] = []
        self._pending: list[tuple[float, int, str, int]] = []
        self._dedup: dict[str, tuple[float, Sent]] = {}
        self._order = itertools.count(1)
        self._receipts = itertools.count(1)
        self._changed: asyncio.Event | None = None
        self._closed = False

    @property
    def fifo(self) -> bool:
        return self._fifo

    async def default_visibility_timeout(self) -> float:
        return self._visibility_timeout

    def __len__(self) -> int:
        """Messages held: visible, delayed and in flight."""
        return len(self._messages)

    def link_dead_letter(self, queue: MemoryQueue) -> None:
        """Send messages received `max_receive_count` times to `queue`.

        Raises:
            ValueError: `queue` is this queue, or not of the same kind (FIFO or standard).
        """
        if queue is self:
            raise ValueError(f"queue {self.name!r} cannot be its own dead-letter queue")
        if queue.fifo != self._fifo:
            kind = "FIFO" if self._fifo else "standard"
            raise ValueError(
                f"the dead-letter queue of the {kind} queue {self.name!r} must be {kind} too"
            )
        self._dead_letter = queue

    # -- sending -----------------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> Sent:
        self._check_open()
        return self._send(message)

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        self._check_open()
        outcomes: list[SendOutcome] = []
        for message in messages:
            try:
                outcomes.append(self._send(message))
            except SidecarError as exc:
                outcomes.append(exc)
        return outcomes

    def _send(self, message: OutgoingMessage) -> Sent:
        now = self._clock.monotonic()
        self._check_fields(message)
        dedup_key = self._dedup_key(message)
        if dedup_key is not None:
            self._forget_old_dedup(now)
            seen = self._dedup.get(dedup_key)
            if seen is not None:
                return seen[1]
        if len(self._messages) >= self._max_messages:
            self._drop_expired(now)
            if len(self._messages) >= self._max_messages:
                raise ResourceExhausted(
                    f"queue {self.name!r} is full ({self._max_messages} messages, its "
                    "max_messages)",
                    reason="OVER_CAPACITY",
                    metadata={"target": self.name, "limit": "max_messages"},
                )
        order = next(self._order)
        stored = _Stored(
            message_id=str(uuid.uuid4()),
            body=message.body,
            attributes=dict(message.attributes),
            group_id=message.group_id or "",
            order=order,
            sent_at=self._clock.wall(),
            expires_at=now + self._retention,
            visible_at=now + message.delay,
        )
        self._enqueue(stored, now)
        sent = Sent(stored.message_id, f"{order:020d}" if self._fifo else "")
        if dedup_key is not None:
            self._dedup[dedup_key] = (now + DEDUPLICATION_WINDOW, sent)
        return sent

    def _check_fields(self, message: OutgoingMessage) -> None:
        if not 0 <= message.delay <= MAX_DELAY:
            raise self._refused(f"a delay is 0 to {MAX_DELAY:g} seconds")
        if not self._fifo:
            if message.group_id or message.deduplication_id:
                raise self._refused("message group and deduplication ids need a FIFO queue")
            return
        if not message.group_id:
            raise self._refused("a FIFO queue needs a message group id")
        if message.delay:
            raise self._refused("a FIFO queue takes no per-message delay")
        if not message.deduplication_id and not self._content_dedup:
            raise self._refused(
                "this FIFO queue needs a deduplication id (it does not deduplicate by content)"
            )

    def _refused(self, text: str) -> InvalidArgument:
        return InvalidArgument(
            f"queue {self.name!r}: {text}", reason="INVALID_REQUEST", metadata={"target": self.name}
        )

    def _dedup_key(self, message: OutgoingMessage) -> str | None:
        if not self._fifo:
            return None
        if message.deduplication_id:
            return message.deduplication_id
        return "sha256:" + hashlib.sha256(message.body).hexdigest()  # at most 256 KiB: fast

    def _forget_old_dedup(self, now: float) -> None:
        # Insertion order is expiry order: the window is the same for every id.
        while self._dedup:
            key, (expires, _) = next(iter(self._dedup.items()))
            if expires > now:
                return
            del self._dedup[key]

    def _enqueue(self, stored: _Stored, now: float) -> None:
        self._messages[stored.message_id] = stored
        if self._fifo:
            group = self._groups.setdefault(stored.group_id, deque())
            group.append(stored)
            if len(group) == 1:
                self._offer_group(stored.group_id)
        elif stored.visible_at > now:
            self._wait_until_visible(stored)
        else:
            heapq.heappush(self._ready, (stored.order, stored.message_id))
        self._notify()

    def _accept_dead_letter(self, stored: _Stored) -> None:
        """Take a message moved here from the queue this one is the dead-letter queue of."""
        now = self._clock.monotonic()
        stored.order = next(self._order)
        stored.visible_at = now
        stored.receipt = None
        stored.version += 1
        self._enqueue(stored, now)

    # -- receiving ---------------------------------------------------------------------------

    async def receive(
        self, max_messages: int, *, wait: float, visibility_timeout: float | None
    ) -> list[ReceivedMessage]:
        self._check_open()
        count = max(1, min(max_messages, MAX_BATCH))
        timeout = self._visibility_timeout if visibility_timeout is None else visibility_timeout
        until = self._clock.monotonic() + wait
        while True:
            changed = self._change_event()  # before looking: a change after it wakes us
            taken = self._take(count, timeout)
            now = self._clock.monotonic()
            if taken or now >= until:
                return taken
            due = self._pending[0][0] if self._pending else until
            await self._wait_for(changed, min(due, until) - now)
            self._check_open()

    def _take(self, count: int, timeout: float) -> list[ReceivedMessage]:
        now = self._clock.monotonic()
        self._promote(now)
        taken: list[ReceivedMessage] = []
        while len(taken) < count:
            stored = self._next_visible(now)
            if stored is None:
                break
            if self._fifo:
                # Consecutive messages of the same group follow the first, in order.
                group = self._groups[stored.group_id]
                batch = [stored]
                for candidate in itertools.islice(group, 1, None):
                    if len(taken) + len(batch) >= count:
                        break
                    if candidate.receipt is not None or not self._deliverable(candidate, now):
                        break
                    batch.append(candidate)
                for item in batch:
                    taken.append(self._deliver(item, now, timeout))
            else:
                taken.append(self._deliver(stored, now, timeout))
        return taken

    def _next_visible(self, now: float) -> _Stored | None:
        """The next message to deliver, after dropping expired ones and moving dead ones."""
        while True:
            stored = self._next_fifo() if self._fifo else self._next_standard(now)
            if stored is None:
                return None
            if stored.expires_at <= now:
                self._remove(stored)
                continue
            if self._dead_letter is not None and not self._deliverable(stored, now):
                self._remove(stored)
                self._dead_letter._accept_dead_letter(stored)
                continue
            return stored

    def _deliverable(self, stored: _Stored, now: float) -> bool:
        """Neither past its retention nor received `max_receive_count` times already."""
        limit = self._max_receive_count
        if stored.expires_at <= now:
            return False
        return limit is None or self._dead_letter is None or stored.receive_count < limit

    def _next_standard(self, now: float) -> _Stored | None:
        while self._ready:
            _, message_id = heapq.heappop(self._ready)
            stored = self._messages.get(message_id)
            if stored is not None and stored.receipt is None and stored.visible_at <= now:
                return stored
        return None

    def _next_fifo(self) -> _Stored | None:
        while self._ready_groups:
            order, group_id = heapq.heappop(self._ready_groups)
            group = self._groups.get(group_id)
            if (
                group
                and group[0].order == order
                and group[0].receipt is None
                and not self._in_flight_by_group.get(group_id)
            ):
                return group[0]
        return None

    def _deliver(self, stored: _Stored, now: float, timeout: float) -> ReceivedMessage:
        stored.receive_count += 1
        stored.receipt = f"{stored.message_id}:{next(self._receipts)}"
        stored.visible_at = now + timeout
        stored.version += 1
        if self._fifo:
            self._in_flight_by_group[stored.group_id] = (
                self._in_flight_by_group.get(stored.group_id, 0) + 1
            )
        self._wait_until_visible(stored)
        return ReceivedMessage(
            message_id=stored.message_id,
            body=stored.body,
            attributes=stored.attributes,
            receipt_handle=stored.receipt,
            receive_count=stored.receive_count,
            sent_at=stored.sent_at,
            group_id=stored.group_id,
            sequence_number=f"{stored.order:020d}" if self._fifo else "",
        )

    # -- acks and visibility -----------------------------------------------------------------

    async def ack(self, receipt_handles: Sequence[str]) -> list[AckOutcome]:
        self._check_open()
        self._promote(self._clock.monotonic())
        outcomes: list[AckOutcome] = []
        for handle in receipt_handles:
            try:
                self._remove(self._held_by(handle))
                outcomes.append(None)
            except SidecarError as exc:
                outcomes.append(exc)
        return outcomes

    async def change_visibility(self, receipt_handle: str, seconds: float) -> None:
        self._check_open()
        now = self._clock.monotonic()
        self._promote(now)
        stored = self._held_by(receipt_handle)
        if seconds > 0:
            stored.visible_at = now + seconds
            stored.version += 1
            self._wait_until_visible(stored)
            return
        self._make_visible(stored, now)
        self._notify()

    def _held_by(self, handle: str) -> _Stored:
        """The in-flight message `handle` holds.

        Raises:
            InvalidArgument: not a handle this queue issues (RECEIPT_INVALID).
            FailedPrecondition: the handle no longer holds its message (RECEIPT_INVALID).
        """
        message_id, _, serial = handle.rpartition(":")
        if not message_id or not serial.isdigit():
            raise InvalidArgument(
                f"{handle[:64]!r} is not a receipt handle of queue {self.name!r}",
                reason="RECEIPT_INVALID",
                metadata={"target": self.name},
            )
        stored = self._messages.get(message_id)
        if stored is None or stored.receipt != handle:
            raise FailedPrecondition(
                "the receipt handle no longer holds its message: it was acked, or its "
                "visibility timeout ran out and it may have been delivered again",
                reason="RECEIPT_INVALID",
                metadata={"target": self.name},
            )
        return stored

    # -- bookkeeping -------------------------------------------------------------------------

    def _wait_until_visible(self, stored: _Stored) -> None:
        entry = (stored.visible_at, stored.order, stored.message_id, stored.version)
        heapq.heappush(self._pending, entry)

    def _promote(self, now: float) -> None:
        """Make visible every message whose delay or visibility timeout has run out."""
        while self._pending and self._pending[0][0] <= now:
            _, _, message_id, version = heapq.heappop(self._pending)
            stored = self._messages.get(message_id)
            if stored is not None and stored.version == version:
                self._make_visible(stored, now)

    def _make_visible(self, stored: _Stored, now: float) -> None:
        was_in_flight = stored.receipt is not None
        stored.receipt = None
        stored.visible_at = now
        stored.version += 1
        if not self._fifo:
            heapq.heappush(self._ready, (stored.order, stored.message_id))
            return
        if was_in_flight:
            self._group_released(stored.group_id)

    def _group_released(self, group_id: str) -> None:
        left = self._in_flight_by_group.get(group_id, 0) - 1
        if left > 0:
            self._in_flight_by_group[group_id] = left
            return
        self._in_flight_by_group.pop(group_id, None)
        self._offer_group(group_id)

    def _offer_group(self, group_id: str) -> None:
        group = self._groups.get(group_id)
        if group and not self._in_flight_by_group.get(group_id):
            heapq.heappush(self._ready_groups, (group[0].order, group_id))

    def _remove(self, stored: _Stored) -> None:
        del self._messages[stored.message_id]
        in_flight = stored.receipt is not None
        stored.version += 1
        if not self._fifo:
            return
        group = self._groups[stored.group_id]
        was_head = group[0] is stored
        group.remove(stored)  # FIFO removals are almost always at the head
        if not group:
            del self._groups[stored.group_id]
        if in_flight:
            self._group_released(stored.group_id)
        elif was_head:
            self._offer_group(stored.group_id)

    def _drop_expired(self, now: float) -> None:
        for stored in [s for s in self._messages.values() if s.expires_at <= now]:
            self._remove(stored)

    # -- waiting -----------------------------------------------------------------------------

    def _change_event(self) -> asyncio.Event:
        if self._changed is None:  # made in the running loop, on first use
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        """Wake every long poll: a message may be visible now."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_for(self, changed: asyncio.Event, seconds: float) -> None:
        """Until the queue changes or `seconds` pass on the clock."""
        waits = [
            asyncio.ensure_future(changed.wait()),
            asyncio.ensure_future(self._clock.sleep(max(seconds, 0.0))),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                f"queue {self.name!r} is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self.name},
            )

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def link_dead_letters(queues: Mapping[str, object]) -> None:
    """Link every memory queue with a `dead_letter` to that queue, found in `queues` (the
    queue services by name, as built).

    Raises:
        ValueError: a `dead_letter` names no memory queue of `queues`, the queue itself, or
            a queue of the other kind (FIFO or standard).
    """
    for name, queue in queues.items():
        if not isinstance(queue, MemoryQueue) or queue.dead_letter_name is None:
            continue
        target = queues.get(queue.dead_letter_name)
        if not isinstance(target, MemoryQueue):
            raise ValueError(
                f"dead_letter of queue {name!r} names {queue.dead_letter_name!r}, which is "
                "not a queue service with backend: memory"
            )
        queue.link_dead_letter(target)


def _build(context: BuildContext[QueueServiceConfig]) -> MemoryQueue:
    settings = context.settings
    return MemoryQueue(
        context.name,
        clock=context.clock,
        fifo=settings.fifo,
        content_based_deduplication=settings.content_based_deduplication,
        visibility_timeout=settings.visibility_timeout,
        max_receive_count=settings.max_receive_count,
        dead_letter=settings.dead_letter,
        max_messages=settings.max_messages,
        message_retention=settings.message_retention,
    )


SPEC = BackendSpec(
    type="queue",
    backend="memory",
    settings=QueueServiceConfig,
    build=_build,
    features=frozenset({FIFO, DEAD_LETTER}),
)
"""A queue in this process's memory, with SQS's visibility and redelivery semantics (FIFO and
dead letters when configured)."""
