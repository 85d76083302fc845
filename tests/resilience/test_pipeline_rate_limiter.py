"""A pipeline given its own `RateLimiter` (a global one, say) uses it instead of building a
local `TokenBucket`, with the same rules: one acquire per attempt, rejections not retried,
no token spent while the breaker is open."""

from __future__ import annotations

import pytest

from sidecar.resilience import (
    CircuitBreakerOptions,
    CircuitOpenError,
    Classification,
    Deadline,
    Pipeline,
    PipelineOptions,
    RateLimitedError,
    RateLimiter,
    RateLimiterSnapshot,
    RetryOptions,
    TokenBucket,
    TokenBucketOptions,
)
from sidecar.testing import FakeClock


class Flaky(Exception):
    """Upstream trouble: retried and counted."""


class RecordingLimiter(RateLimiter):
    """Grants (or refuses) every acquire and records what was asked."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.acquired: list[tuple[float, Deadline | None]] = []

    async def acquire(self, weight: float = 1, deadline: Deadline | None = None) -> None:
        self.acquired.append((weight, deadline))
        if self.refuse:
            raise RateLimitedError(retry_after=2.5)

    def snapshot(self) -> RateLimiterSnapshot:
        return RateLimiterSnapshot(available=7, capacity=10, rate=5, queued=1)


def classify(exc: BaseException) -> Classification:
    return Classification(is_failure=isinstance(exc, Flaky))


def make(clock: FakeClock, limiter: RateLimiter | None, **options: object) -> Pipeline:
    return Pipeline(
        "target",
        PipelineOptions(**options),  # type: ignore[arg-type]
        clock=clock,
        classify=classify,
        rate_limiter=limiter,
    )


async def test_given_limiter_replaces_the_bucket_of_the_options(clock: FakeClock) -> None:
    limiter = RecordingLimiter()
    target = make(clock, limiter, rate_limit=TokenBucketOptions(1, 1))
    await target.execute(_ok)
    assert (target.rate_limiter, len(limiter.acquired)) == (limiter, 1)
    assert target.snapshot().rate_limiter == limiter.snapshot()


async def test_without_a_given_limiter_the_options_build_a_local_bucket(clock: FakeClock) -> None:
    target = make(clock, None, rate_limit=TokenBucketOptions(1, 1))
    assert isinstance(target.rate_limiter, TokenBucket)


async def test_given_limiter_is_asked_once_per_attempt_with_weight_and_deadline(
    clock: FakeClock,
) -> None:
    limiter = RecordingLimiter()
    target = make(clock, limiter, retry=RetryOptions(max_retries=1, base_delay=0, jitter=False))
    outcomes = [Flaky(), "ok"]

    async def upstream() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    deadline = Deadline.after(10, clock)
    assert await target.execute(upstream, deadline=deadline, weight=3) == "ok"
    assert [weight for weight, _ in limiter.acquired] == [3, 3]
    assert all(given is deadline for _, given in limiter.acquired)


async def test_rejection_by_the_given_limiter_is_not_retried(clock: FakeClock) -> None:
    limiter = RecordingLimiter(refuse=True)
    target = make(clock, limiter, retry=RetryOptions(max_retries=3, base_delay=0))
    calls = 0

    async def upstream() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    with pytest.raises(RateLimitedError) as raised:
        await target.execute(upstream)
    assert (calls, len(limiter.acquired), raised.value.retry_after) == (0, 1, 2.5)


async def test_open_breaker_asks_the_given_limiter_for_nothing(clock: FakeClock) -> None:
    limiter = RecordingLimiter()
    target = make(
        clock, limiter, circuit_breaker=CircuitBreakerOptions(failure_threshold=1, reset_timeout=60)
    )

    async def failing() -> str:
        raise Flaky()

    with pytest.raises(Flaky):
        await target.execute(failing)
    with pytest.raises(CircuitOpenError):
        await target.execute(failing)
    assert len(limiter.acquired) == 1


async def _ok() -> str:
    return "ok"
