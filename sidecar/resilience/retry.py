"""Retry settings, the backoff formula, and a retry budget that stops retry storms.

The retry loop itself lives in the pipeline (it must see the deadline, the breaker and the
classification); this module holds the parts that are pure policy:

- `RetryOptions`: how often and how long to wait, named as in the spec's YAML.
- `backoff_delay`: capped exponential backoff with AWS-style "full jitter", fed an injected
  random source so tests are exact.
- `RetryBudget`: retries may be at most a fraction of recent requests plus a small floor
  (Envoy's and Finagle's retry budgets), so a failing upstream is not hit by every caller
  times `max_retries`.

Usage:

    options = RetryOptions(max_retries=2, base_delay=0.1)
    delay = backoff_delay(options, attempt=1, random=random.random)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.resilience._window import RollingWindow
from sidecar.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["RetryBudget", "RetryOptions", "backoff_delay"]


def _finite_at_least(value: float, minimum: float) -> bool:
    return math.isfinite(value) and value >= minimum


@dataclass(frozen=True, slots=True)
class RetryOptions:
    """How failed attempts are retried.

    Attributes:
        max_retries: Retries after the first attempt; 0 means no retry.
        base_delay: Seconds before the first retry (before jitter).
        max_delay: Cap on any single backoff delay, in seconds.
        backoff_multiplier: Growth of the delay from one retry to the next.
        jitter: Full jitter: the delay is uniform in [0, capped exponential delay].
        budget_ratio: Retries may be at most this fraction of requests in the budget window
            (on top of the floor below).
        budget_min_retries_per_second: A floor of retries always allowed, so low-traffic
            targets can still retry.
        budget_window: Seconds over which requests and retries are counted.
    """

    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0
    backoff_multiplier: float = 2.0
    jitter: bool = True
    budget_ratio: float = 0.2
    budget_min_retries_per_second: float = 10.0
    budget_window: float = 10.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not _finite_at_least(self.base_delay, 0.0):
            raise ValueError("base_delay must be >= 0")
        if not _finite_at_least(self.max_delay, self.base_delay):
            raise ValueError("max_delay must be >= base_delay")
        if not _finite_at_least(self.backoff_multiplier, 1.0):
            raise ValueError("backoff_multiplier must be >= 1")
        if not _finite_at_least(self.budget_ratio, 0.0):
            raise ValueError("budget_ratio must be >= 0")
        if not _finite_at_least(self.budget_min_retries_per_second, 0.0):
            raise ValueError("budget_min_retries_per_second must be >= 0")
        if not (math.isfinite(self.budget_window) and self.budget_window > 0):
            raise ValueError("budget_window must be > 0")


def backoff_delay(options: RetryOptions, attempt: int, random: Callable[[], float]) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    The delay is `base_delay * backoff_multiplier ** (attempt - 1)`, capped at `max_delay`;
    with jitter it is `random()` times that, so concurrent callers spread out instead of
    retrying in lockstep.

    Raises:
        ValueError: If `attempt` is below 1.
    """
    if attempt < 1:
        raise ValueError("attempt must be >= 1")
    try:
        delay = options.base_delay * options.backoff_multiplier ** (attempt - 1)
    except OverflowError:
        delay = options.max_delay
    delay = min(delay, options.max_delay)
    if options.jitter:
        delay *= random()
    return delay


# The budget window's counters.
_REQUESTS, _RETRIES = 0, 1


class RetryBudget:
    """Limits retries to `min_per_second * window + ratio * requests` within the window.

    Args:
        options: The `budget_*` settings are used.
        clock: Where time comes from.
    """

    __slots__ = ("_floor", "_ratio", "_window")

    def __init__(self, options: RetryOptions, clock: Clock = SYSTEM_CLOCK) -> None:
        self._ratio = options.budget_ratio
        self._floor = options.budget_min_retries_per_second * options.budget_window
        self._window = RollingWindow(options.budget_window, clock, counters=2)

    def record_request(self) -> None:
        """Count one request (a call, not an attempt) toward the budget."""
        self._window.add(_REQUESTS)

    def try_spend_retry(self) -> bool:
        """Take one retry from the budget; False (and nothing spent) when it is used up."""
        requests, retries = self._window.totals()
        if retries + 1 > self._floor + self._ratio * requests:
            return False
        self._window.add(_RETRIES)
        return True
