"""Deadline: one instant on the injected clock, asked how much time is left."""

from __future__ import annotations

from sidecar.resilience import Deadline
from sidecar.testing import FakeClock


async def test_deadline_after_counts_down_with_the_clock(clock: FakeClock) -> None:
    deadline = Deadline.after(5, clock)
    await clock.advance(2)
    assert deadline.remaining() == 3.0


async def test_remaining_is_never_negative(clock: FakeClock) -> None:
    deadline = Deadline.after(1, clock)
    await clock.advance(3)
    assert deadline.remaining() == 0.0


async def test_deadline_expires_when_its_instant_is_reached(clock: FakeClock) -> None:
    deadline = Deadline.after(1, clock)
    before = deadline.expired()
    await clock.advance(1)
    assert (before, deadline.expired()) == (False, True)


def test_no_seconds_means_no_deadline(clock: FakeClock) -> None:
    deadline = Deadline.after(None, clock)
    assert (deadline.remaining(), deadline.expired()) == (None, False)


def test_never_is_unbounded() -> None:
    assert (Deadline.never().remaining(), Deadline.never().expired()) == (None, False)


def test_min_with_picks_the_smaller_bound(clock: FakeClock) -> None:
    deadline = Deadline.after(5, clock)
    assert (deadline.min_with(2), deadline.min_with(9), deadline.min_with(None)) == (2, 5, 5)


def test_min_with_on_unbounded_deadline_returns_the_timeout() -> None:
    assert (Deadline.never().min_with(3), Deadline.never().min_with(None)) == (3, None)
