"""The specification's request metrics through the OpenTelemetry SDK.

`integration_requests_total{service, operation, status}` counts every RPC and
`integration_request_duration_seconds{service, operation}` times it (kept outside the SDK,
see `durations`; it is exported on the Prometheus endpoint); `service` is the integration
(target) that served the call, or the gRPC service when none did.

`integration_error_rate{service}` is the share of the service's calls that failed on the
server's side (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, DATA_LOSS: not the
caller's own mistakes) over the last one to two minutes (the current and the previous
whole minute); `integration_connection_status{service}` is 1 while the service's last
health verdict is SERVING, else 0. `rpc.server.duration` (OpenTelemetry's RPC metric, in
milliseconds, with rpc.system / rpc.service / rpc.method / rpc.grpc.status_code) times
every RPC by method; `integration_pool_connections{connection, state}` counts each pool's
connections in use and idle; `integration_pubsub_messages_total{service, event}` counts
pub/sub deliveries (see `message_counts`).

The resilience core adds, in the shape of Polly's telemetry,
`integration_resilience_events_total{service, strategy, event}` (retries, breaker
transitions, rejections, timeouts) and the gauge `integration_circuit_breaker_state{service}`
(0 closed, 1 open, 2 half-open, 3 isolated).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from sidecar.observability.durations import RequestDurations
from sidecar.observability.message_counts import MessageCounts
from sidecar.observability.tracing import GRPC_STATUS_CODES
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
HealthStates = Callable[[], Iterable[tuple[str, bool]]]
"""(service, healthy) of every integration."""
PoolUsages = Callable[[], Iterable[tuple[str, tuple[int, int] | None]]]
"""(connection, (in use, idle) or None when unknown) of every connection."""
# Milliseconds: the unit of `rpc.server.duration`.
RPC_DURATION_BUCKETS: Sequence[float] = tuple(bound * 1000 for bound in DURATION_BUCKETS)
_SERVER_ERRORS = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "DATA_LOSS"})
_ERROR_WINDOW = 60.0
"""Seconds of one error-rate window: the rate covers the current and the previous one."""


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
        self.rpc_durations = RequestDurations(
            RPC_DURATION_BUCKETS,
            name="rpc_server_duration",
            description="Duration of inbound RPCs (OpenTelemetry rpc.server.duration)",
            labels=("rpc_service", "rpc_method_status"),
            unit="milliseconds",
            export_labels=_rpc_labels,
        )
        """`rpc.server.duration`, exported by its Prometheus collector (and pushed over
        OTLP, when configured, through `push_rpc_durations`)."""
        self._push_rpc: Any = None
        # Per service: [window, calls, errors, previous window's calls, its errors].
        self._windows: dict[str, list[int]] = {}
        meter.create_observable_gauge(
            "integration_error_rate",
            callbacks=[self._observe_error_rates],
            unit="1",
            description="Share of the service's calls that failed upstream, last 1-2 minutes",
        )
        self._health: HealthStates | None = None
        self._pools: PoolUsages | None = None
        self._messages: MessageCounts | None = None
        meter.create_observable_gauge(
            "integration_connection_status",
            callbacks=[self._observe_health],
            unit="1",
            description="1 while the service's last health verdict is SERVING, else 0",
        )
        meter.create_observable_gauge(
            "integration_pool_connections",
            callbacks=[self._observe_pools],
            unit="1",
            description="Connections of each connection's pool, by state (in_use, idle)",
        )
        meter.create_observable_counter(
            "integration_pubsub_messages",
            callbacks=[self._observe_messages],
            unit="1",
            description="Pub/sub messages delivered, redelivered, acknowledged, dropped",
        )
        self._meter = meter
        self._breaker_states = breaker_states
        if breaker_states is not None:
            meter.create_observable_gauge(
                "integration_circuit_breaker_state",
                callbacks=[self._observe_breakers],
                description="Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 isolated",
            )

    def watch(self, health: HealthStates, pools: PoolUsages, messages: MessageCounts) -> None:
        """Read these at export time: integrations' health, connections' pools, messages."""
        self._health, self._pools, self._messages = health, pools, messages

    def push_rpc_durations(self) -> None:
        """Also record `rpc.server.duration` in the SDK, for OTLP export (~12 µs per call,
        paid only by those who push metrics)."""
        self._push_rpc = self._meter.create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="Duration of inbound RPCs",
            explicit_bucket_boundaries_advisory=RPC_DURATION_BUCKETS,
        )
        self._rpc_attributes: dict[tuple[str, str, str], dict[str, Any]] = {}

    def record_rpc(self, service: str, method: str, status: str, seconds: float) -> None:
        """Time one RPC: `service` the full gRPC service name, `method` the full method
        path, `status` the gRPC code's name."""
        milliseconds = seconds * 1000
        self.rpc_durations.observe(service, f"{method}|{status}", milliseconds)
        if self._push_rpc is not None:
            key = (service, method, status)
            attributes = self._rpc_attributes.get(key)
            if attributes is None:
                attributes = self._rpc_attributes[key] = dict(
                    _rpc_labels(key[0], f"{method}|{status}")
                )
            self._push_rpc.record(milliseconds, attributes)

    def _count_outcome(self, service: str, status: str) -> None:
        window = int(time.monotonic() // _ERROR_WINDOW)
        counts = self._windows.get(service)
        if counts is None:
            counts = self._windows[service] = [window, 0, 0, 0, 0]
        elif counts[0] != window:
            _roll(counts, window)
        counts[1] += 1
        if status in _SERVER_ERRORS:
            counts[2] += 1

    def _observe_error_rates(self, _options: CallbackOptions) -> Iterable[Observation]:
        window = int(time.monotonic() // _ERROR_WINDOW)
        for service, counts in list(self._windows.items()):
            if counts[0] != window:
                _roll(counts, window)
            calls = counts[1] + counts[3]
            yield Observation(
                (counts[2] + counts[4]) / calls if calls else 0.0, {"service": service}
            )

    def _observe_health(self, _options: CallbackOptions) -> Iterable[Observation]:
        for service, healthy in self._health() if self._health is not None else ():
            yield Observation(1 if healthy else 0, {"service": service})

    def _observe_pools(self, _options: CallbackOptions) -> Iterable[Observation]:
        for connection, usage in self._pools() if self._pools is not None else ():
            if usage is not None:
                in_use, idle = usage
                yield Observation(in_use, {"connection": connection, "state": "in_use"})
                yield Observation(idle, {"connection": connection, "state": "idle"})

    def _observe_messages(self, _options: CallbackOptions) -> Iterable[Observation]:
        for service, event, count in self._messages if self._messages is not None else ():
            yield Observation(count, {"service": service, "event": event})

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
        self._count_outcome(service, status)

    def _observe_requests(self, _options: CallbackOptions) -> Iterable[Observation]:
        for (service, operation, status), count in list(self._counts.items()):
            yield Observation(count, {"service": service, "operation": operation, "status": status})


def _roll(counts: list[int], window: int) -> None:
    """Move `counts` to `window`: the current one becomes the previous if adjacent."""
    adjacent = counts[0] == window - 1
    counts[3], counts[4] = (counts[1], counts[2]) if adjacent else (0, 0)
    counts[0], counts[1], counts[2] = window, 0, 0


def _rpc_labels(service: str, method_status: str) -> tuple[tuple[str, Any], ...]:
    """The RPC semantic conventions' attributes of one `rpc_durations` series (kept as one
    joined key on the hot path, split here, at export time)."""
    method, _, status = method_status.partition("|")
    return (
        ("rpc.system", "grpc"),
        ("rpc.service", service),
        ("rpc.method", method.rsplit("/", 1)[-1]),
        ("rpc.grpc.status_code", GRPC_STATUS_CODES.get(status, 2)),
    )
