"""The pub/sub capability: domain types, the `PubSubBackend` protocol, and glob matching.

The model is Redis pub/sub: fire-and-forget messages on named channels, subscribers by exact
channel or by glob pattern, no persistence (a message reaches only the subscriptions that exist
when it is published). Unlike raw Redis, a slow subscriber never makes memory grow: each
subscription has a bounded buffer, and overflow drops the oldest buffered messages and reports
how many as a `Dropped` event. (At-least-once delivery, with consumer groups and dead
letters, is the optional `ReliablePubSub` protocol of `reliable.py`, kept apart so that a plain
backend needs none of it.)

Delivery rule (Redis's): a subscription receives one `Message` per matching entry it holds. A
subscription to channel `news` and to pattern `n*` receives a message on `news` twice, once
with `pattern=None` and once with `pattern="n*"`, and `publish` counts both deliveries.

Usage:

    subscription = await broker.subscribe(["orders"], ["news.*"], buffer_size=256)
    try:
        async for event in subscription:
            if isinstance(event, Dropped):
                log.warning("lost %d messages", event.count)
            else:
                handle(event.channel, event.payload)
    finally:
        await subscription.close()
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

__all__ = [
    "Dropped",
    "Gap",
    "GlobPattern",
    "Message",
    "PacedPubSub",
    "PubSubBackend",
    "Subscription",
    "SubscriptionEvent",
    "compile_glob",
    "glob_match",
    "subscription_targets",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One published message, as one subscription receives it.

    Attributes:
        channel: the channel it was published on.
        payload: the opaque bytes published.
        metadata: string pairs published with it (read-only).
        pattern: the subscribed pattern that matched, or None if delivered for the channel.
        published_at: wall-clock time of publishing, seconds since the epoch.
    """

    channel: str
    payload: bytes
    metadata: Mapping[str, str]
    pattern: str | None
    published_at: float


@dataclass(frozen=True, slots=True)
class Dropped:
    """`count` messages were dropped for this subscription since its previous event.

    They were the oldest buffered ones: the subscriber read too slowly and its buffer filled.
    The messages after this event are the newer ones that were kept, in order.
    """

    count: int


@dataclass(frozen=True, slots=True)
class Gap:
    """The link to the broker this subscription rides on was lost at `started_at` and, once
    `ended_at` is set, is back since then (wall-clock seconds since the epoch).

    Messages published in between were not delivered (plain channels are at-most-once), so
    an app can resynchronise: the event comes when the link drops (`ended_at` None) and again
    when it is back and every channel and pattern is subscribed anew. A gap is never dropped
    from a full buffer.
    """

    started_at: float
    ended_at: float | None = None


SubscriptionEvent: TypeAlias = Message | Dropped | Gap


class Subscription(Protocol):
    """An open subscription: iterate it for events; close it to free it.

    Iteration yields each channel's events in publishing order (across channels, as the
    backend receives them: Kafka keeps no order between topics) and ends when the
    subscription is closed (by `close`, or by the broker's `close`); messages still
    buffered then are discarded. If the task iterating it is cancelled, or the iterator is
    closed, the subscription closes too.
    Whoever subscribes must close it, for example in a `finally`; a subscription never
    iterated stays open until then.
    """

    def __aiter__(self) -> AsyncIterator[SubscriptionEvent]:
        """Events as they arrive; waits while there are none; ends once closed."""
        ...

    def batches(self, most: int) -> AsyncGenerator[list[SubscriptionEvent], None]:
        """The same events, as lists of all that wait when each is taken (at most `most`
        messages, with any `Dropped` and `Gap` among them, in order); waits only while
        none does, so an event that arrives alone comes at once, in a list of one.
        Iterate either this or the subscription itself, not both."""
        ...

    async def close(self) -> None:
        """Unsubscribe, end the iteration and free the buffer; idempotent."""
        ...

    @property
    def dropped_total(self) -> int:
        """Messages dropped for this subscription since it was made."""
        ...


class PubSubBackend(Protocol):
    """Publish to channels; subscribe to channels and glob patterns (Redis semantics).

    `publish` and `subscribe` raise `Unavailable` if the backend is unreachable or closed.
    """

    async def publish(
        self, channel: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> int:
        """Send a message to every current subscriber; return the number of deliveries.

        Deliveries are counted as Redis `PUBLISH` counts receivers: one per subscription per
        matching channel or pattern (see the module docstring).
        """
        ...

    async def subscribe(
        self, channels: Sequence[str], patterns: Sequence[str], *, buffer_size: int
    ) -> Subscription:
        """Subscribe to exact channels and glob patterns (at least one of either).

        Returns once the subscription is active: every message published after that is
        delivered to it. Repeated channels or patterns count once. `buffer_size` (>= 1) is how
        many undelivered messages it holds before dropping the oldest.
        """
        ...

    async def ping(self) -> None:
        """Return if the backend can serve requests, else raise `Unavailable`."""
        ...

    async def close(self) -> None:
        """Close every subscription (their iterations end cleanly) and the backend."""
        ...

    def subscriber_count(self) -> int:
        """Subscriptions currently open through this backend."""
        ...


class PacedPubSub(PubSubBackend, Protocol):
    """A backend whose spec lists the feature `paced`: it can hold messages for a subscriber
    whose buffer is full, so a slow reader paces the publishers instead of losing messages.
    Backends without it (Redis pub/sub, which pushes whatever is published) drop the oldest
    and report `Dropped`."""

    async def subscribe(
        self,
        channels: Sequence[str],
        patterns: Sequence[str],
        *,
        buffer_size: int,
        paced: bool = False,
    ) -> Subscription:
        """`PubSubBackend.subscribe`; with `paced`, a full buffer makes `publish` wait for
        the reader to make room (within the publisher's deadline) instead of dropping."""
        ...


def subscription_targets(
    channels: Sequence[str], patterns: Sequence[str], buffer_size: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The de-duplicated channels and patterns of a `subscribe` call, checked as every
    backend must check them."""
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    unique_channels = tuple(dict.fromkeys(channels))
    unique_patterns = tuple(dict.fromkeys(patterns))
    if not unique_channels and not unique_patterns:
        raise ValueError("subscribe needs at least one channel or pattern")
    return unique_channels, unique_patterns


# -- glob patterns -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GlobPattern:
    """A Redis glob pattern compiled to a regular expression; see `glob_match`."""

    pattern: str
    _regex: re.Pattern[bytes] = field(repr=False, compare=False)

    def matches(self, channel: str) -> bool:
        """Whether `channel` matches this pattern."""
        if not channel:
            # Redis's matcher stops as soon as the string is exhausted, so the empty channel
            # matches only the empty pattern (not even "*").
            return not self.pattern
        return self._regex.fullmatch(channel.encode()) is not None


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> GlobPattern:
    """Compile a Redis glob pattern (cached: compiling the same pattern again is free)."""
    return GlobPattern(pattern, re.compile(_translate(pattern.encode()), re.DOTALL))


def glob_match(pattern: str, channel: str) -> bool:
    """Whether `channel` matches the Redis glob `pattern` (as PSUBSCRIBE and KEYS match).

    - `*` any run of bytes, `?` any one byte;
    - `[abc]` one of, `[^abc]` none of, `[a-z]` a range (reversed ends are swapped);
      inside brackets `\\x` is a literal `x`, and a missing `]` closes at the end;
    - `\\x` a literal `x` (a trailing lone `\\` is literal);
    - case-sensitive, everything else literal.

    Like Redis, matching is on the UTF-8 bytes: `?` matches one byte, so `?` does not match
    `é` but `??` does.
    """
    return compile_glob(pattern).matches(channel)


def _class_regex(negated: bool, singles: list[int], ranges: list[tuple[int, int]]) -> bytes:
    items = b"".join(b"\\x%02x" % byte for byte in singles) + b"".join(
        b"\\x%02x-\\x%02x" % pair for pair in ranges
    )
    if not items:
        return b"." if negated else b"(?!)"  # "[^]" matches any byte, "[]" none
    return b"[" + (b"^" if negated else b"") + items + b"]"


def _tokens(pattern: bytes) -> list[bytes | None]:
    """Split a pattern into one-byte regexes and None for `*`, parsing as Redis does."""
    tokens: list[bytes | None] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == ord("*"):
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
            i += 1
        elif char == ord("?"):
            tokens.append(b".")
            i += 1
        elif char == ord("["):
            i += 1
            negated = i < n and pattern[i] == ord("^")
            if negated:
                i += 1
            singles: list[int] = []
            ranges: list[tuple[int, int]] = []
            while True:
                if i + 1 < n and pattern[i] == ord("\\"):
                    singles.append(pattern[i + 1])
                    i += 2
                elif i >= n:
                    break  # unterminated: the class ends with the pattern
                elif pattern[i] == ord("]"):
                    i += 1
                    break
                elif i + 2 < n and pattern[i + 1] == ord("-"):
                    low, high = sorted((pattern[i], pattern[i + 2]))
                    ranges.append((low, high))
                    i += 3
                else:
                    singles.append(pattern[i])
                    i += 1
            tokens.append(_class_regex(negated, singles, ranges))
        else:
            if char == ord("\\") and i + 1 < n:
                i += 1
            tokens.append(re.escape(pattern[i : i + 1]))
            i += 1
    return tokens


def _translate(pattern: bytes) -> bytes:
    """A regex for `fullmatch` equivalent to the glob, free of catastrophic backtracking.

    Every token but `*` matches exactly one byte, so between two stars the leftmost match of
    the fixed-length segment is always the best choice; an atomic group `(?>.*?segment)`
    commits to it, which keeps matching O(len(pattern) * len(channel)) like Redis's matcher
    instead of exponential in the number of stars.
    """
    segments: list[list[bytes]] = [[]]
    for token in _tokens(pattern):
        if token is None:
            segments.append([])
        else:
            segments[-1].append(token)
    if len(segments) == 1:
        return b"".join(segments[0])
    head, *middle, tail = (b"".join(segment) for segment in segments)
    return (
        head + b"".join(b"(?>.*?" + segment + b")" for segment in middle if segment) + b".*" + tail
    )
