"""Hedged first chunk: when a deployment is slow to answer, ask the next one too.

An alias with `hedge: {after: 800ms}` starts its next deployment when no first chunk has
arrived from the current one `after` that long; whichever sends its first chunk first
answers the call, and the other request is cancelled at once (its upstream response
closed, its token reservation settled with what it cost). `after: p95` waits for the 95th
percentile of the deployment's recent times to first chunk instead (never less than
`floor`), so only the slow tail is hedged; until the deployment has `MIN_SAMPLES` recent
first chunks there is no percentile and no hedge.

Bounded, as a retry is: at most one extra request per call, and each hedge spends one
retry from the alias's retry budget, so hedging pauses while the budget is spent. The
extra request is admitted like any attempt, but never waits: a deployment that would make
it wait (cooling down, breaker open, over budget) is not hedged to.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = ["MIN_SAMPLES", "FirstChunkTimes", "HedgePolicy"]

MIN_SAMPLES: Final = 20
"""Recent first chunks a deployment needs before its percentile is trusted."""
_WINDOW: Final = 200
"""First chunks remembered per deployment."""


class FirstChunkTimes:
    """A deployment's last `_WINDOW` times to first chunk, in seconds."""

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=_WINDOW)

    def add(self, seconds: float) -> None:
        """Remember one time to first chunk."""
        self._samples.append(seconds)

    def percentile(self, percent: float) -> float | None:
        """The `percent` percentile (nearest rank), or None with fewer than `MIN_SAMPLES`."""
        samples = self._samples
        if len(samples) < MIN_SAMPLES:
            return None
        ordered = sorted(samples)
        return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """When an alias hedges.

    Attributes:
        after: Seconds without a first chunk before the next deployment starts too; None
            when `percentile` decides.
        percentile: Hedge after this percentile of the deployment's recent times to first
            chunk (for example 95.0).
        floor: Never hedge sooner than this (with `percentile`).
    """

    after: float | None = None
    percentile: float | None = None
    floor: float = 0.0

    def delay(self, recent: FirstChunkTimes) -> float | None:
        """Seconds to wait for the first chunk before hedging; None: do not hedge."""
        if self.after is not None:
            return self.after
        assert self.percentile is not None  # the config sets one of the two
        seen = recent.percentile(self.percentile)
        return None if seen is None else max(self.floor, seen)
