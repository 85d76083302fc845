"""Backoff delays and the retry budget."""

from __future__ import annotations

import pytest

from sidecar.resilience import RetryBudget, RetryOptions, backoff_delay
from sidecar.testing import FakeClock

NO_JITTER = RetryOptions(base_delay=1, backoff_multiplier=2, max_delay=30, jitter=False)


def test_backoff_grows_exponentially_from_base_delay() -> None:
    delays = [backoff_delay(NO_JITTER, attempt, lambda: 0.5) for attempt in range(1, 5)]
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_backoff_is_capped_at_max_delay() -> None:
    assert backoff_delay(NO_JITTER, 6, lambda: 0.5) == 30.0


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert backoff_delay(NO_JITTER, 100_000, lambda: 0.5) == 30.0


def test_full_jitter_scales_the_capped_delay_by_random() -> None:
    options = RetryOptions(base_delay=1, backoff_multiplier=2, max_delay=30, jitter=True)
    assert backoff_delay(options, 3, lambda: 0.25) == 1.0


@pytest.mark.parametrize("random_value", [0.0, 0.999999])
def test_full_jitter_stays_between_zero_and_the_capped_delay(random_value: float) -> None:
    options = RetryOptions(base_delay=1, max_delay=5, jitter=True)
    assert 0.0 <= backoff_delay(options, 10, lambda: random_value) < 5.0


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        backoff_delay(NO_JITTER, 0, lambda: 0.5)


def spend_all(budget: RetryBudget, tries: int) -> int:
    return sum(budget.try_spend_retry() for _ in range(tries))


def test_budget_denies_a_retry_storm(clock: FakeClock) -> None:
    options = RetryOptions(budget_ratio=0.2, budget_min_retries_per_second=1, budget_window=10)
    budget = RetryBudget(options, clock)
    for _ in range(100):
        budget.record_request()
    # 1/s * 10 s floor + 20 % of 100 requests.
    assert spend_all(budget, 100) == 30


def test_budget_floor_lets_a_quiet_target_retry(clock: FakeClock) -> None:
    options = RetryOptions(budget_ratio=0.2, budget_min_retries_per_second=0.5, budget_window=10)
    assert spend_all(RetryBudget(options, clock), 10) == 5


async def test_budget_recovers_as_old_retries_leave_the_window(clock: FakeClock) -> None:
    options = RetryOptions(budget_ratio=0, budget_min_retries_per_second=0.5, budget_window=10)
    budget = RetryBudget(options, clock)
    spend_all(budget, 10)
    await clock.advance(10)
    assert budget.try_spend_retry()
