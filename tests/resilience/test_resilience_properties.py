"""Property tests: invariants that must hold for any sequence of operations."""

from __future__ import annotations

import asyncio
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.resilience import (
    CircuitBreaker,
    CircuitBreakerOptions,
    CircuitOpenError,
    CircuitState,
    Deadline,
    RateLimitedError,
    TokenBucket,
    TokenBucketOptions,
)
from sidecar.testing import FakeClock

# --- token bucket: never grants more than burst + rate * elapsed -------------------------

bucket_ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 3)),
        st.tuples(st.just("acquire"), st.floats(0.1, 1)),
        st.tuples(st.just("acquire_by"), st.floats(0.1, 1), st.floats(0, 2)),
        st.tuples(st.just("try"), st.floats(0.1, 1)),
        st.tuples(st.just("adjust"), st.floats(-1, 1)),
        st.tuples(st.just("cancel"), st.integers(0, 5)),
    ),
    max_size=25,
)


async def _bucket_scenario(
    rate: float, burst: float, ops: list[tuple[object, ...]]
) -> list[tuple[float, float, bool]]:
    """Play `ops`; return (time, tokens, is_grant) in the order things happened."""
    clock = FakeClock()
    bucket = TokenBucket(TokenBucketOptions(requests_per_second=rate, burst_size=burst), clock)
    ledger: list[tuple[float, float, bool]] = []
    waiting: list[asyncio.Task[None]] = []

    async def acquire(weight: float, deadline: Deadline | None) -> None:
        with contextlib.suppress(RateLimitedError):
            await bucket.acquire(weight, deadline)
            ledger.append((clock.monotonic(), weight, True))

    for op in ops:
        kind = op[0]
        if kind == "advance":
            await clock.advance(float(op[1]))  # type: ignore[arg-type]
        elif kind in ("acquire", "acquire_by"):
            weight = float(op[1]) * burst  # type: ignore[arg-type]
            deadline = Deadline.after(float(op[2]), clock) if kind == "acquire_by" else None  # type: ignore[arg-type]
            waiting.append(asyncio.create_task(acquire(weight, deadline)))
            for _ in range(5):
                await asyncio.sleep(0)
        elif kind == "try":
            weight = float(op[1]) * burst  # type: ignore[arg-type]
            if bucket.try_acquire(weight):
                ledger.append((clock.monotonic(), weight, True))
        elif kind == "adjust":
            # Settle with "real usage": consume more (a debt), or refund no more than was used.
            used = sum(tokens for _, tokens, _ in ledger)
            delta = max(float(op[1]) * burst, -used)  # type: ignore[arg-type]
            bucket.adjust(delta)
            ledger.append((clock.monotonic(), delta, False))
        elif waiting:
            waiting[int(op[1]) % len(waiting)].cancel()  # type: ignore[call-overload]
            for _ in range(5):
                await asyncio.sleep(0)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    return ledger


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0.5, 20), burst=st.floats(1, 20), ops=bucket_ops)
def test_bucket_never_grants_more_than_burst_plus_refill(
    rate: float, burst: float, ops: list[tuple[object, ...]]
) -> None:
    # Over every stretch of time, from one grant to a later one, grants never exceed the
    # burst, the refill of that stretch and what `adjust` gave back within it. A positive
    # `adjust` is a debt: it only delays grants that come after it.
    ledger = asyncio.run(_bucket_scenario(rate, burst, ops))
    for first, (start, _, is_grant) in enumerate(ledger):
        if not is_grant:
            continue
        granted = refunded = 0.0
        for time, tokens, grant in ledger[first:]:
            if grant:
                granted += tokens
                assert granted <= burst + rate * (time - start) + refunded + 1e-6
            elif tokens < 0:
                refunded -= tokens


# --- circuit breaker: only legal transitions -------------------------------------------

LEGAL = {
    (CircuitState.CLOSED, CircuitState.OPEN),
    (CircuitState.OPEN, CircuitState.HALF_OPEN),
    (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    (CircuitState.HALF_OPEN, CircuitState.OPEN),
}


class _ManualClock:
    """A synchronous stand-in: the breaker only reads `monotonic()`."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("the breaker never sleeps")


breaker_options = st.builds(
    CircuitBreakerOptions,
    failure_threshold=st.integers(0, 4),
    reset_timeout=st.floats(0.5, 10),
    failure_ratio=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    minimum_throughput=st.integers(1, 8),
    sampling_duration=st.floats(1, 20),
    half_open_max_calls=st.integers(1, 3),
)
# Calls and their outcomes dominate, so runs reach OPEN and HALF_OPEN often; the manual
# overrides are rarer, or they would reset the interesting states away.
breaker_ops = st.lists(
    st.one_of(
        st.sampled_from(
            ["acquire", "failure", "acquire", "success", "failure", "ignored", "isolate", "reset"]
        ),
        st.floats(0, 12),
    ),
    min_size=5,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(options=breaker_options, ops=breaker_ops)
def test_breaker_makes_only_legal_transitions(
    options: CircuitBreakerOptions, ops: list[str | float]
) -> None:
    clock = _ManualClock()
    breaker = CircuitBreaker(options, clock)
    seen: list[tuple[CircuitState, CircuitState]] = []
    breaker.add_listener(lambda old, new: seen.append((old, new)))
    state = CircuitState.CLOSED
    for op in ops:
        seen.clear()
        if isinstance(op, float):
            clock.now += op
        elif op == "acquire":
            with contextlib.suppress(CircuitOpenError):
                breaker.acquire()
        else:
            getattr(
                breaker,
                {"success": "record_success", "failure": "record_failure"}.get(
                    op, "record_ignored" if op == "ignored" else op
                ),
            )()
        for old, new in seen:
            assert old is state and old is not new
            if op == "reset":
                assert new is CircuitState.CLOSED
            elif op == "isolate":
                assert new is CircuitState.ISOLATED
            else:
                assert (old, new) in LEGAL
            state = new
        assert breaker.state is state
