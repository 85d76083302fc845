"""Events the pipelines report: retries, breaker transitions, rejections and timeouts, and
the lifecycle of each streamed call (admitted, first chunk, settled).

They take the shape of Polly's telemetry (`event.name`, `pipeline.name`, `strategy.name`), so
the metrics layer can turn each into one counter increment. Events are built only when a
listener is registered, and a failing listener is logged, never raised into the call.

A `StreamingPipeline` adds what a per-call metric needs: how the call ended (`outcome`), how
long it took and when its first chunk went out (on the pipeline's clock), the weight it was
charged, and `detail`, an object the pipeline's owner attached to the call (the pipeline
never looks inside it; a GenAI metrics listener finds its operation and token usage there).

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
            "circuit_open", "panic" (let through an open breaker, in panic mode),
            "rate_limited", "bulkhead_full" or "timeout".
        attempt: The attempt concerned (for "retry": the one that failed); 0 before any.
        delay: Seconds: the wait before the retry, the break duration for "opened", the
            advised retry-after of a rejection, the pause of "cooldown", or the timeout that
            fired.
        outcome: A rejection's reason (the `reason` of the error the caller gets); for
            "settled", "success", "failure" or "ignored". None otherwise.
        elapsed: Seconds since the call was admitted ("first_chunk", "settled").
        first_chunk: For "settled": seconds from admission to the first chunk, or None if
            none went out.
        weight: The weight reserved ("admitted", rejections) or finally charged ("settled").
        detail: What the pipeline's owner attached to the call (`admit(detail=...)`,
            `settle(detail=...)`); opaque to the resilience core.

    Strategies and events of a `StreamingPipeline` beyond the ones above: "cooldown" with
    "cooling_down" (a rejection) and "cooldown" (a pause began); "rate_limiter" with
    "over_capacity" (a weight no limiter can ever grant); "stream" with "admitted",
    "first_chunk" and "settled" (delivered only to lifecycle listeners).
    """

    pipeline: str
    strategy: str
    event: str
    attempt: int
    delay: float | None
    outcome: str | None = None
    elapsed: float | None = None
    first_chunk: float | None = None
    weight: float | None = None
    detail: object = None


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
