"""Retry rounds of a route: when every deployment failed, whether and when to go again.

A round tries each deployment once. Another round starts only if the route's retry policy
has rounds left, its retry budget allows one, no deployment said the request can never
fit, and the wait fits the deadline. The wait is the policy's backoff, but at least the
shortest Retry-After (or breaker reopening time) any deployment gave; a hint longer than
`max_delay` ends the call, since that server wants more patience than one retry may spend.

Panic mode: an open breaker keeps calls off a deployment while the others answer, but
when a round ends with no answer and some deployments were skipped because their breakers
are open, failing the call makes things worse than no breaker (two deployments failing half
their calls each both trip, and the alias has nowhere to go). Those deployments are then
tried as a last resort, by priority, through their open breakers, as Envoy routes to every
host below its healthy-panic threshold. `integration_resilience_events_total{event="panic"}`
counts such attempts; the log says when an alias enters panic mode and when it is over.
"""

from __future__ import annotations

import logging
from typing import Final

from sidecar.ai.deployment import Deployment
from sidecar.ai.route import Route
from sidecar.errors import ErrorKind, SidecarError
from sidecar.resilience import Clock, Deadline, backoff_delay

__all__ = ["Rounds", "calm", "falls_back", "final_error", "panics"]

_log = logging.getLogger("sidecar.ai")

_FALLBACK_KINDS: Final = frozenset(
    {ErrorKind.UNAVAILABLE, ErrorKind.RESOURCE_EXHAUSTED, ErrorKind.DEADLINE_EXCEEDED}
)
_NOT_RETRIED: Final = frozenset({"TOKEN_LIMIT_EXCEEDED"})
PANIC_QUIET: Final = 10.0
"""Seconds without a call through an open breaker after which panic mode is over (so a
flapping upstream logs an episode, not every call)."""


def falls_back(error: SidecarError) -> bool:
    """Whether `error` hands the call to the next deployment: UNAVAILABLE (down, circuit
    open), RESOURCE_EXHAUSTED (rate limited, over budget) or DEADLINE_EXCEEDED (timeout)."""
    return error.kind in _FALLBACK_KINDS


class Rounds:
    """Decides whether, and after how long, another round over the deployments starts."""

    def __init__(self, route: Route, deadline: Deadline | None, clock: Clock) -> None:
        self._route = route
        self._deadline = deadline
        self._clock = clock
        self.number = 1
        if route.budget is not None:
            route.budget.record_request()

    async def again(self, errors: list[SidecarError]) -> bool:
        """Sleep until the next round and return True, or return False to give up."""
        retry = self._route.retry
        if retry is None or self.number > retry.max_retries or not errors:
            return False
        if any(error.reason in _NOT_RETRIED for error in errors):
            return False
        delay = backoff_delay(retry, self.number, self._route.random)
        hints = [e.retry_after for e in errors if e.retry_after is not None]
        if hints:
            if min(hints) > retry.max_delay:
                return False
            delay = max(delay, min(hints))
        remaining = None if self._deadline is None else self._deadline.remaining()
        if remaining is not None and delay >= remaining:
            return False
        budget = self._route.budget
        if budget is not None and not budget.try_spend_retry():
            return False
        self.number += 1
        await self._clock.sleep(delay)
        return True


def panics(route: Route, refused: list[Deployment], errors: list[SidecarError]) -> bool:
    """Whether a round whose deployments either failed or `refused` (breaker open) gets a
    last-resort pass through those open breakers: `route` is an alias of several
    deployments (a failover group) and none answered. The refusals leave `errors` (their
    retry hints would only delay the next round). Logs when the alias enters panic mode."""
    if route.kind != "alias" or len(route.deployments) < 2 or not refused:
        return False
    errors[:] = [error for error in errors if error.reason != "CIRCUIT_OPEN"]
    panic = route.panic
    now = route.clock.monotonic()
    if panic.since is None:
        panic.since = now
        _log.warning(
            "deployments with open breakers are tried as a last resort (panic mode)",
            extra={"alias": route.name, "open": ",".join(d.name for d in refused)},
        )
    panic.last = now
    return True


def calm(route: Route) -> None:
    """A call was answered through a closed breaker: once no call has needed an open one
    for `PANIC_QUIET` seconds, the alias has left panic mode (logged once)."""
    panic = route.panic
    if panic.since is None:
        return
    now = route.clock.monotonic()
    if now - panic.last >= PANIC_QUIET:
        _log.info(
            "no call needed an open breaker lately: panic mode over",
            extra={"alias": route.name, "seconds": round(panic.last - panic.since, 3)},
        )
        panic.since = None


def final_error(errors: list[SidecarError]) -> SidecarError:
    """The error that answers the call: the last one, with the soonest retry hint."""
    error = errors[-1]
    hints = [e.retry_after for e in errors if e.retry_after is not None]
    if hints and falls_back(error):
        error.retry_after = min(hints)
    if len(errors) > 1:
        tried = [e.metadata.get("deployment", "") for e in errors]
        error.metadata["deployments_tried"] = ",".join(d for d in tried if d)
    return error
