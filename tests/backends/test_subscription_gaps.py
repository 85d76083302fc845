"""`BufferedSubscription` and gaps: a `Gap` takes its place in order among the messages, and
a full buffer drops the oldest messages, never a gap."""

from __future__ import annotations

from sidecar.backends.pubsub import Dropped, Gap, Message
from sidecar.backends.pubsub.buffered import BufferedSubscription


def message(n: int) -> Message:
    return Message("c", str(n).encode(), {}, None, 0.0)


async def test_a_gap_arrives_in_order_and_is_never_dropped_from_a_full_buffer() -> None:
    subscription = BufferedSubscription(("c",), (), 2, lambda _: None)
    subscription.deliver(message(1))
    subscription.gap(Gap(10.0))
    subscription.deliver(message(2))
    subscription.deliver(message(3))  # full: message 1 goes, the gap stays
    subscription.gap(Gap(10.0, 12.5))
    subscription.deliver(message(4))  # full again: message 2 goes
    assert subscription.buffered() == 2
    events = []
    async for event in subscription:
        events.append(event)
        if len(events) == 5:
            await subscription.close()
    assert events == [Dropped(2), Gap(10.0), message(3), Gap(10.0, 12.5), message(4)]
