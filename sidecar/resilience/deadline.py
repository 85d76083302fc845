"""A point in monotonic time by which a call must be done, made once and passed down.

The servicer turns the gRPC deadline into a `Deadline` once; every layer below asks it how
much time is left instead of carrying its own countdown, so no retry sleeps past it and the
remaining time becomes the upstream timeout.

Usage:

    deadline = Deadline.after(context.time_remaining(), SYSTEM_CLOCK)
    timeout = deadline.min_with(30.0)   # at most 30 s, less if the caller has less
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["Deadline"]


@dataclass(frozen=True, slots=True)
class Deadline:
    """A monotonic instant (`at`) on `clock`, or no deadline at all (`at is None`).

    Attributes:
        at: The monotonic time at which the deadline passes; None means unbounded.
        clock: The clock `at` is measured on.
    """

    at: float | None
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float | None, clock: Clock) -> Deadline:
        """A deadline `seconds` from now on `clock`; None gives a deadline that never passes."""
        if seconds is None:
            return cls(None, clock)
        return cls(clock.monotonic() + seconds, clock)

    @classmethod
    def never(cls) -> Deadline:
        """The deadline that never passes."""
        return _NEVER

    def remaining(self) -> float | None:
        """Seconds left, never negative; None when unbounded."""
        if self.at is None:
            return None
        left = self.at - self.clock.monotonic()
        return left if left > 0.0 else 0.0

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.at is not None and self.clock.monotonic() >= self.at

    def min_with(self, seconds: float | None) -> float | None:
        """The smaller of the time left and `seconds` (None on either side means unbounded)."""
        left = self.remaining()
        if left is None:
            return seconds
        if seconds is None:
            return left
        return left if left < seconds else seconds


_NEVER = Deadline(None)
