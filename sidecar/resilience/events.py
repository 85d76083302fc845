"""Events the pipeline reports: retries, breaker transitions, rejections and timeouts.

They take the shape of Polly's telemetry (`event.name`, `pipeline.name`, `strategy.name`), so
the metrics layer can turn each into one counter increment. Events are built only when a
listener is registered, and a failing listener is logged, never raised into the call.

Usage:

    pipeline.add_listener(lambda e: counter.add(1, {"event.name": e.event}))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["EventListener", "ResilienceEvent", "publish"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResilienceEvent:
    """Something a policy did, for metrics and logs.

    Attributes:
        pipeline: The pipeline's name (the target).
        strategy: "retry", "circuit_breaker", "rate_limiter", "bulkhead",
            "attempt_timeout" or "total_timeout".
        event: "retry", "budget_exhausted", "opened", "half_opened", "closed", "isolated",
            "circuit_open", "rate_limited", "bulkhead_full" or "timeout".
        attempt: The attempt concerned (for "retry": the one that failed); 0 before any.
        delay: Seconds: the wait before the retry, the break duration for "opened", the
            advised retry-after of a rejection, or the timeout that fired.
    """

    pipeline: str
    strategy: str
    event: str
    attempt: int
    delay: float | None


EventListener = Callable[[ResilienceEvent], None]
"""Receives every event of a pipeline; must be quick and must not block."""


def publish(listeners: Sequence[EventListener], event: ResilienceEvent) -> None:
    """Hand `event` to each listener; a listener's exception is logged and swallowed."""
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            # A broken metrics hook must not break the call it observes.
            _log.exception("resilience event listener failed")
