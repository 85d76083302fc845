"""A circuit breaker: stop calling an upstream that keeps failing, then probe it carefully.

Three parts, as in Polly's `CircuitBreaker/{Health,Controller}`:

- a rolling window of clock buckets (`RollingWindow`) that counts calls, failures and slow
  calls over `sampling_duration`;
- a trip rule (`_TripRule`): `failure_threshold` consecutive failures (Dapr's rule), or a
  failure ratio of at least `failure_ratio`, or a slow-call ratio of at least
  `slow_call_ratio` (resilience4j's slow-call rule), once `minimum_throughput` calls are in
  the window;
- the state machine (`CircuitBreaker`): CLOSED -> OPEN -> HALF_OPEN -> CLOSED or OPEN again,
  plus ISOLATED (held open by an operator) and `reset()` back to CLOSED.

Recovery follows evidence, not only a timer. The break starts short (`min_reset_timeout`)
and doubles each time the breaker opens again straight from half-open, up to
`reset_timeout` (as Polly's break-duration generator and Envoy's ejection time grow); once
the breaker closes it starts short again. And whoever sees the upstream answer while the
breaker is open (a health probe, a link that reconnected, a call let through in panic mode)
calls `upstream_recovered()`, which half-opens it at once: the next calls are the real
probes, admitted `half_open_max_calls` at a time.

Under asyncio a transition never awaits, so no lock is needed: each method runs to its end
before any other task sees the breaker.

Usage:

    breaker = CircuitBreaker(CircuitBreakerOptions(failure_threshold=3), clock)
    breaker.acquire()                # raises CircuitOpenError when not admitted
    started = breaker.attempt_started()
    try:
        result = await call()
    except UpstreamError:
        breaker.record_failure(started)
        raise
    except asyncio.CancelledError:   # the caller gave up: slow, or its own choice
        breaker.record_cancelled(started)
        raise
    breaker.record_success(started)

A slow call is an attempt that took at least `slow_call_duration`, whatever its outcome. One
the caller cut off (its deadline passed, or it cancelled) after waiting that long is also a
failure, as an attempt timeout would be: a hung upstream trips the breaker even when every
caller's deadline is shorter than any attempt timeout. An attempt the caller cut off sooner
is the caller's choice and not counted.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.resilience._window import RollingWindow
from sidecar.resilience.clock import SYSTEM_CLOCK, Clock, SystemClock
from sidecar.resilience.errors import CircuitOpenError

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerOptions",
    "CircuitBreakerSnapshot",
    "CircuitState",
    "TransitionListener",
]

_log = logging.getLogger(__name__)

# The rolling window's counters.
_CALLS, _FAILURES, _SLOW = 0, 1, 2


@dataclass(frozen=True, slots=True)
class CircuitBreakerOptions:
    """When the breaker trips and how it recovers.

    Attributes:
        enabled: False turns the breaker off (it never trips; `isolate()` still works).
        failure_threshold: Consecutive failures that trip it; 0 disables this rule.
        reset_timeout: The longest break: seconds the breaker stays open, at most, before it
            lets a probe through.
        min_reset_timeout: The first break; each consecutive opening doubles it, up to
            `reset_timeout` (a larger value is capped there). None: every break is
            `reset_timeout`.
        failure_ratio: Failure ratio in the window that trips it; 0 disables this rule.
        minimum_throughput: Calls the window must hold before the ratio rule applies.
        sampling_duration: Length of the rolling window in seconds (the spec's
            `monitoring_period`).
        half_open_max_calls: Probes admitted while half-open; all must succeed to close.
        slow_call_duration: Seconds after which an attempt counts as slow; one the caller cut
            off after waiting that long also counts as a failure. None turns both off.
        slow_call_ratio: Slow-call ratio in the window that trips it, once
            `minimum_throughput` calls are in the window; 0 disables this rule (calls cut off
            after `slow_call_duration` still count as failures).
    """

    enabled: bool = True
    failure_threshold: int = 5
    reset_timeout: float = 30.0
    min_reset_timeout: float | None = None
    failure_ratio: float = 0.5
    minimum_throughput: int = 20
    sampling_duration: float = 10.0
    half_open_max_calls: int = 1
    slow_call_duration: float | None = None
    slow_call_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 0:
            raise ValueError("failure_threshold must be >= 0")
        if not (math.isfinite(self.reset_timeout) and self.reset_timeout > 0):
            raise ValueError("reset_timeout must be > 0")
        shortest = self.min_reset_timeout
        if shortest is not None and not (math.isfinite(shortest) and shortest > 0):
            raise ValueError("min_reset_timeout must be > 0 or None")
        if not 0.0 <= self.failure_ratio <= 1.0:
            raise ValueError("failure_ratio must be between 0 and 1")
        if self.minimum_throughput < 1:
            raise ValueError("minimum_throughput must be >= 1")
        if not (math.isfinite(self.sampling_duration) and self.sampling_duration > 0):
            raise ValueError("sampling_duration must be > 0")
        if self.half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be >= 1")
        slow = self.slow_call_duration
        if slow is not None and not (math.isfinite(slow) and slow > 0):
            raise ValueError("slow_call_duration must be > 0 or None")
        if not 0.0 <= self.slow_call_ratio <= 1.0:
            raise ValueError("slow_call_ratio must be between 0 and 1")


class CircuitState(enum.Enum):
    """Where the breaker stands."""

    CLOSED = "closed"
    """Calls flow; failures are counted."""
    OPEN = "open"
    """Calls are rejected until the break has passed or the upstream is seen answering."""
    HALF_OPEN = "half_open"
    """A few probe calls test whether the upstream has recovered."""
    ISOLATED = "isolated"
    """Held open by hand until `reset()`."""


@dataclass(frozen=True, slots=True)
class CircuitBreakerSnapshot:
    """A read-only view of the breaker, for health reports and metrics.

    Attributes:
        state: The current state.
        consecutive_failures: Failures since the last success.
        failure_ratio: Failures / calls in the rolling window (0.0 when empty).
        total_in_window: Calls in the rolling window.
        slow_call_ratio: Slow calls / calls in the rolling window (0.0 when empty).
        retry_after: Seconds until the breaker admits calls again, or None when it admits
            them now (closed) or nobody knows (half-open with a probe in flight).
    """

    state: CircuitState
    consecutive_failures: int
    failure_ratio: float
    total_in_window: int
    retry_after: float | None
    slow_call_ratio: float = 0.0


TransitionListener = Callable[[CircuitState, CircuitState], None]
"""Called with (old_state, new_state) after each transition."""


@dataclass(frozen=True, slots=True)
class _TripRule:
    """Decides, from the counts, whether a closed breaker must open."""

    failure_threshold: int
    failure_ratio: float
    slow_call_ratio: float
    minimum_throughput: int

    def tripped(self, consecutive: int, window: RollingWindow) -> bool:
        if self.failure_threshold and consecutive >= self.failure_threshold:
            return True
        if not (self.failure_ratio or self.slow_call_ratio):
            return False
        total, failures, slow = window.totals()
        if total < self.minimum_throughput:
            return False
        if self.failure_ratio and failures >= self.failure_ratio * total:
            return True
        return bool(self.slow_call_ratio) and slow >= self.slow_call_ratio * total


class CircuitBreaker:
    """The breaker of one upstream target.

    Args:
        options: Trip and recovery settings.
        clock: Where time comes from.
    """

    __slots__ = (
        "_clock",
        "_consecutive",
        "_listeners",
        "_monotonic",
        "_open_until",
        "_openings",
        "_options",
        "_probes_in_flight",
        "_probes_succeeded",
        "_rule",
        "_slow_after",
        "_state",
        "_window",
    )

    def __init__(self, options: CircuitBreakerOptions, clock: Clock = SYSTEM_CLOCK) -> None:
        self._options = options
        self._clock = clock
        # The system clock read without a Python-level call: timing runs on every attempt.
        self._monotonic: Callable[[], float] = (
            time.monotonic if type(clock) is SystemClock else clock.monotonic
        )
        self._window = RollingWindow(options.sampling_duration, clock, counters=3)
        enabled = options.enabled
        slow_after = options.slow_call_duration if enabled else None
        self._slow_after = slow_after
        self._rule = _TripRule(
            failure_threshold=options.failure_threshold if enabled else 0,
            failure_ratio=options.failure_ratio if enabled else 0.0,
            slow_call_ratio=options.slow_call_ratio if slow_after is not None else 0.0,
            minimum_throughput=options.minimum_throughput,
        )
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        self._open_until = 0.0
        self._openings = 0  # consecutive openings without a close: the break grows with them
        self._probes_in_flight = 0
        self._probes_succeeded = 0
        self._listeners: list[TransitionListener] = []

    @property
    def state(self) -> CircuitState:
        """The current state. OPEN turns HALF_OPEN only on the next `acquire()`."""
        return self._state

    @property
    def options(self) -> CircuitBreakerOptions:
        """The options the breaker was built with."""
        return self._options

    def add_listener(self, listener: TransitionListener) -> None:
        """Call `listener(old, new)` after every transition (for metrics and events)."""
        self._listeners.append(listener)

    def acquire(self) -> None:
        """Ask to make one call.

        Raises:
            CircuitOpenError: If the breaker is open or isolated, or half-open with every
                probe slot taken.
        """
        state = self._state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.OPEN:
            now = self._clock.monotonic()
            if now < self._open_until:
                raise CircuitOpenError(retry_after=self._open_until - now)
            self._half_open()
        elif state is CircuitState.ISOLATED:
            raise CircuitOpenError("circuit breaker is isolated", retry_after=self._isolated_hint())
        if self._probes_in_flight + self._probes_succeeded >= self._options.half_open_max_calls:
            raise CircuitOpenError("circuit breaker is half-open; probe in flight")
        self._probes_in_flight += 1

    def attempt_started(self) -> float | None:
        """Mark the start of an admitted attempt; pass the result to the `record_*` call
        that ends it. None (and no clock read) when the slow-call rule is off."""
        return None if self._slow_after is None else self._monotonic()

    def record_success(self, started: float | None = None) -> None:
        """The admitted call succeeded (slowly, if it took `slow_call_duration` or more)."""
        state = self._state
        slow = started is not None and self._is_slow(started)
        if state is CircuitState.CLOSED:
            self._consecutive = 0
            self._window.add(_CALLS)
            if slow:
                self._count_slow()
        elif state is CircuitState.HALF_OPEN and self._probes_in_flight:
            if slow:  # the upstream answers, but too slowly to trust again
                self._open()
                return
            self._probes_in_flight -= 1
            self._probes_succeeded += 1
            if self._probes_succeeded >= self._options.half_open_max_calls:
                self._close()
        # OPEN or ISOLATED: a late result of a call admitted earlier says nothing new.

    def record_failure(self, started: float | None = None) -> None:
        """The admitted call failed because of the upstream."""
        state = self._state
        if state is CircuitState.CLOSED:
            self._consecutive += 1
            window = self._window
            window.add(_CALLS)
            window.add(_FAILURES)
            if started is not None and self._is_slow(started):
                window.add(_SLOW)
            if self._rule.tripped(self._consecutive, window):
                self._open()
        elif state is CircuitState.HALF_OPEN and self._probes_in_flight:
            self._open()

    def record_cancelled(self, started: float | None) -> None:
        """The caller gave up on the admitted call: its deadline passed, or it cancelled.

        After `slow_call_duration` or more the upstream had all that time to answer: like an
        attempt timeout, a failure (and a slow call). Sooner, it is the caller's choice and
        counts as `record_ignored`.
        """
        if started is None or not self._is_slow(started):
            self.record_ignored()
        else:
            self.record_failure(started)

    def record_ignored(self) -> None:
        """The admitted call ended in a way that says nothing about upstream health.

        For example the caller's bad input, a cancellation, or a rejection further down. It
        frees a half-open probe slot and changes nothing else.
        """
        if self._state is CircuitState.HALF_OPEN and self._probes_in_flight:
            self._probes_in_flight -= 1

    def upstream_recovered(self) -> None:
        """Evidence that the upstream answers again (a health probe succeeded, a link
        reconnected): an open breaker half-opens now instead of waiting out its break."""
        if self._state is CircuitState.OPEN:
            self._half_open()

    @property
    def break_duration(self) -> float:
        """Seconds the breaker stays open when it opens next (or stayed open, while open)."""
        options = self._options
        doublings = max(self._openings - (self._state is CircuitState.OPEN), 0)
        shortest = options.min_reset_timeout
        base = options.reset_timeout if shortest is None else min(shortest, options.reset_timeout)
        return min(base * 2.0 ** min(doublings, 64), options.reset_timeout)

    def isolate(self) -> None:
        """Hold the breaker open until `reset()` (an operator's kill switch)."""
        if self._state is not CircuitState.ISOLATED:
            self._clear_probes()
            self._transition(CircuitState.ISOLATED)

    def reset(self) -> None:
        """Close the breaker and forget all counts, from any state."""
        self._window.clear()
        self._consecutive = 0
        self._openings = 0
        self._clear_probes()
        if self._state is not CircuitState.CLOSED:
            self._transition(CircuitState.CLOSED)

    def snapshot(self) -> CircuitBreakerSnapshot:
        """A consistent read-only view of the breaker now."""
        total, failures, slow = self._window.totals()
        state = self._state
        retry_after: float | None = None
        if state is CircuitState.OPEN:
            retry_after = max(0.0, self._open_until - self._clock.monotonic())
        elif state is CircuitState.ISOLATED:
            retry_after = self._isolated_hint()
        return CircuitBreakerSnapshot(
            state=state,
            consecutive_failures=self._consecutive,
            failure_ratio=failures / total if total else 0.0,
            total_in_window=total,
            retry_after=retry_after,
            slow_call_ratio=slow / total if total else 0.0,
        )

    def _is_slow(self, started: float) -> bool:
        limit = self._slow_after
        return limit is not None and self._monotonic() - started >= limit

    def _count_slow(self) -> None:
        """One more slow call in the window (already counted as a call); trip if due."""
        self._window.add(_SLOW)
        if self._rule.tripped(self._consecutive, self._window):
            self._open()

    def _isolated_hint(self) -> float:
        # Nobody knows when an operator resets an isolated breaker; one break duration is
        # a sensible time to tell clients to come back.
        return self._options.reset_timeout

    def _open(self) -> None:
        self._open_until = self._clock.monotonic() + self.break_duration
        self._openings += 1
        self._clear_probes()
        self._transition(CircuitState.OPEN)

    def _half_open(self) -> None:
        self._clear_probes()
        self._transition(CircuitState.HALF_OPEN)

    def _close(self) -> None:
        self._window.clear()
        self._consecutive = 0
        self._openings = 0
        self._clear_probes()
        self._transition(CircuitState.CLOSED)

    def _clear_probes(self) -> None:
        self._probes_in_flight = 0
        self._probes_succeeded = 0

    def _transition(self, new: CircuitState) -> None:
        old = self._state
        self._state = new
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                # A broken metrics hook must not break the calls the breaker guards.
                _log.exception("circuit breaker listener failed")
