"""`LocalFanout`: the local side of a broker that holds one wire subscription per distinct
*wire key* and fans each arriving message out to the sidecar's own subscriptions.

Brokers speak their own pattern language (AMQP binding keys, NATS subject wildcards), which
cannot express every Redis glob. So each subscribed channel or glob is mapped by `widen` to
a wire key the broker understands that matches *at least* what it matches (an exact
channel to itself, `orders.*` to `orders.#` on AMQP or `orders.>` on NATS, an inexpressible
glob to the broker's match-all), and every arriving message is matched again locally,
exactly, with `compile_glob`. Wire keys are reference-counted: the first local entry needing
one makes the broker subscribe it, the last one leaving unsubscribes it.

`dispatch(channel, ..., wire=W)` delivers to the entries whose wire key is W (for brokers
that hand a message over once per matching wire subscription, as NATS does); `wire=None`
delivers to every matching entry (for brokers that hand it over once, as one AMQP queue
with many bindings does). Either way a subscription gets one `Message` per matching channel
and pattern it holds, the delivery rule of `base.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sidecar.backends.pubsub.base import GlobPattern, Message, compile_glob
from sidecar.backends.pubsub.buffered import BufferedSubscription

__all__ = ["LocalFanout"]

Key = tuple[bool, str]
"""(is_pattern, channel or glob)."""


class LocalFanout:
    """Local subscriptions by what they listen to, and the wire keys that feed them.

    Args:
        widen: (is_pattern, name) -> the wire key covering it.
    """

    def __init__(self, widen: Callable[[bool, str], str]) -> None:
        self._widen = widen
        self.subscriptions: dict[BufferedSubscription, None] = {}
        self._entries: dict[Key, dict[BufferedSubscription, None]] = {}
        # The pattern entries again, compiled: a message is looked up by its channel among
        # the exact entries and matched only against these.
        self._patterns: dict[Key, GlobPattern] = {}
        self._wire_of: dict[Key, str] = {}
        self._wire_refs: dict[str, int] = {}

    @property
    def wire_keys(self) -> list[str]:
        """Every wire key some local entry needs now."""
        return list(self._wire_refs)

    def add(self, subscription: BufferedSubscription) -> list[str]:
        """Register `subscription`; return the wire keys that are new (to subscribe)."""
        self.subscriptions[subscription] = None
        added: list[str] = []
        for key in _keys(subscription):
            listeners = self._entries.get(key)
            if listeners is None:
                listeners = self._entries[key] = {}
                if key[0]:
                    self._patterns[key] = compile_glob(key[1])
                wire = self._wire_of[key] = self._widen(*key)
                self._wire_refs[wire] = self._wire_refs.get(wire, 0) + 1
                if self._wire_refs[wire] == 1:
                    added.append(wire)
            listeners[subscription] = None
        return added

    def wires_of(self, subscription: BufferedSubscription) -> set[str]:
        """The wire keys feeding `subscription` (it must be registered)."""
        return {self._wire_of[key] for key in _keys(subscription)}

    def remove(self, subscription: BufferedSubscription) -> list[str]:
        """Unregister `subscription`; return the wire keys no longer needed (to drop)."""
        self.subscriptions.pop(subscription, None)
        dropped: list[str] = []
        for key in _keys(subscription):
            listeners = self._entries.get(key)
            if listeners is None:
                continue
            listeners.pop(subscription, None)
            if listeners:
                continue
            del self._entries[key]
            self._patterns.pop(key, None)
            wire = self._wire_of.pop(key)
            self._wire_refs[wire] -= 1
            if not self._wire_refs[wire]:
                del self._wire_refs[wire]
                dropped.append(wire)
        return dropped

    def count(self, channel: str) -> int:
        """Deliveries a message on `channel` makes to the local subscriptions."""
        total = len(self._entries.get((False, channel), ()))
        for key, glob in self._patterns.items():
            if glob.matches(channel):
                total += len(self._entries[key])
        return total

    def dispatch(
        self,
        channel: str,
        payload: bytes,
        metadata: Mapping[str, str],
        published_at: float,
        *,
        wire: str | None = None,
    ) -> None:
        """Deliver one arrived message to every local entry (fed by `wire`) it matches."""
        exact: Key = (False, channel)
        matched = [exact] if exact in self._entries else []
        matched += [key for key, glob in self._patterns.items() if glob.matches(channel)]
        for key in matched:
            if wire is not None and self._wire_of[key] != wire:
                continue
            # One immutable Message shared by every subscription of this entry.
            pattern = key[1] if key[0] else None
            message = Message(channel, payload, metadata, pattern, published_at)
            for subscription in self._entries[key]:
                subscription.deliver(message)

    def close_all(self) -> None:
        """Close every local subscription (their iterations end)."""
        for subscription in list(self.subscriptions):
            subscription.close_now()


def _keys(subscription: BufferedSubscription) -> list[Key]:
    return [(False, c) for c in subscription.channels] + [
        (True, glob.pattern) for glob in subscription.patterns
    ]
