"""The specification's request metrics through the OpenTelemetry SDK.

`integration_requests_total{service, operation, status}` counts every RPC and
`integration_request_duration_seconds{service, operation}` times it (kept outside the SDK,
see `durations`; it is exported on the Prometheus endpoint); `service` is the integration
(target) that served the call, or the gRPC service when none did.

The resilience core adds, in the shape of Polly's telemetry,
`integration_resilience_events_total{service, strategy, event}` (retries, breaker
transitions, rejections, timeouts) and the gauge `integration_circuit_breaker_state{service}`
(0 closed, 1 open, 2 half-open, 3 isolated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from sidecar.observability.durations import RequestDurations
from sidecar.resilience import CircuitState, ResilienceEvent

__all__ = ["DURATION_BUCKETS", "Metrics", "build_meter_provider"]

DURATION_BUCKETS: Sequence[float] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BREAKER_STATE_VALUES = {
    CircuitState.CLOSED: 0,
    CircuitState.OPEN: 1,
    CircuitState.HALF_OPEN: 2,
    CircuitState.ISOLATED: 3,
}
BreakerStates = Callable[[], Iterable[tuple[str, CircuitState]]]


def build_meter_provider(readers: Sequence[MetricReader]) -> MeterProvider:
    """A MeterProvider exporting to `readers` (Prometheus, in-memory in tests)."""
    return MeterProvider(metric_readers=list(readers))


class Metrics:
    """Request metrics; label dicts are built once per label set to keep the hot path cheap."""

    def __init__(self, meter: Meter, breaker_states: BreakerStates | None = None) -> None:
        # Counted in plain ints and read by the SDK at export time: `counter.add` costs
        # ~7 µs per call on the hot path, a dict increment well under 1 µs.
        self._counts: dict[tuple[str, str, str], int] = {}
        meter.create_observable_counter(
            "integration_requests_total",
            callbacks=[self._observe_requests],
            unit="1",
            description="Integration requests served",
        )
        self.durations = RequestDurations(DURATION_BUCKETS)
        """`integration_request_duration_seconds`, exported by its Prometheus collector."""
        self._events = meter.create_counter(
            "integration_resilience_events_total",
            unit="1",
            description="Retries, breaker transitions, rejections and timeouts per integration",
        )
        self._breaker_states = breaker_states
        if breaker_states is not None:
            meter.create_observable_gauge(
                "integration_circuit_breaker_state",
                callbacks=[self._observe_breakers],
                description="Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 isolated",
            )

    def record_resilience_event(self, event: ResilienceEvent) -> None:
        """Count one event of an integration's pipeline (an EventListener)."""
        self._events.add(
            1, {"service": event.pipeline, "strategy": event.strategy, "event": event.event}
        )

    def _observe_breakers(self, _options: CallbackOptions) -> Iterable[Observation]:
        assert self._breaker_states is not None
        for service, state in self._breaker_states():
            yield Observation(_BREAKER_STATE_VALUES[state], {"service": service})

    def record_request(self, service: str, operation: str, status: str, seconds: float) -> None:
        """Count one finished request and record how long it took.

        Label sets are bounded by construction: configured integrations x proto methods x
        status codes.
        """
        key = (service, operation, status)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        self.durations.observe(service, operation, seconds)

    def _observe_requests(self, _options: CallbackOptions) -> Iterable[Observation]:
        for (service, operation, status), count in list(self._counts.items()):
            yield Observation(count, {"service": service, "operation": operation, "status": status})
