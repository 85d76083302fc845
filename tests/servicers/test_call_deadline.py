"""One deadline per call, made from the gRPC context on the sidecar's injected clock."""

from __future__ import annotations

from typing import Any, cast

import pytest

from sidecar.servicers._common import Context, call_deadline
from sidecar.testing import FakeClock


class _Context:
    """Only what `call_deadline` reads of a grpc.aio context."""

    def __init__(self, remaining: float | None) -> None:
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining


def context(remaining: float | None) -> Context:
    return cast(Context, cast(Any, _Context(remaining)))


def test_the_deadline_is_on_the_injected_clock() -> None:
    clock = FakeClock(100.0)
    deadline = call_deadline(context(10.0), clock)
    assert deadline is not None and deadline.clock is clock
    assert deadline.at == pytest.approx(110.0)


async def test_it_expires_when_the_injected_clock_passes_it() -> None:
    clock = FakeClock()
    deadline = call_deadline(context(2.0), clock)
    assert deadline is not None and deadline.remaining() == pytest.approx(2.0)
    await clock.advance(2.5)
    assert deadline.remaining() == 0.0


def test_a_margin_is_kept_but_never_more_than_a_tenth_of_the_time_left() -> None:
    clock = FakeClock()
    assert call_deadline(context(10.0), clock, margin=0.05).at == pytest.approx(9.95)  # type: ignore[union-attr]
    assert call_deadline(context(0.2), clock, margin=0.05).at == pytest.approx(0.18)  # type: ignore[union-attr]


def test_no_caller_deadline_is_no_deadline() -> None:
    assert call_deadline(context(None), FakeClock()) is None
