"""The `integration:` section, and the per-service partial overrides of its policies.

`integration:` holds the policy defaults every service's outbound calls start from (pool,
retry, circuit breaker, rate limit, bulkhead, timeouts) plus health checks and metrics. A
service may override each policy partially: every field of an override is optional, and an
absent or null field is inherited. `Config.policies_for` returns the merged result.

Each override model must list exactly the fields of its full policy model, with the same
bounds (both use the types of `_common`); a test checks the field lists match.

Some defaults depend on the service type (`SERVICE_TYPE_DEFAULTS`): a cache call that has
not answered in 5 s is dead, a SQL statement may legitimately run for 30. They apply where
neither `integration:` nor the service sets the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ._address import HostPort
from ._common import (
    AtLeastOne,
    AtLeastZero,
    ConfigModel,
    Fraction,
    Multiplier,
    PositiveRate,
    ServiceName,
)
from ._units import DurationSeconds
from .observability import OtlpConfig, TracingConfig

__all__ = [
    "CONNECTION_TYPE_DEFAULTS",
    "SERVICE_TYPE_DEFAULTS",
    "BulkheadConfig",
    "BulkheadOverride",
    "CircuitBreakerConfig",
    "CircuitBreakerOverride",
    "ConnectionPoolConfig",
    "ConnectionPoolOverride",
    "ConnectionPoolsConfig",
    "HealthMonitoringConfig",
    "IntegrationConfig",
    "MetricsConfig",
    "RateLimitConfig",
    "RateLimitOverride",
    "RateLimitingConfig",
    "RetryPolicyConfig",
    "RetryPolicyOverride",
    "TimeoutsConfig",
    "TimeoutsOverride",
    "with_connection_type_defaults",
    "with_service_type_defaults",
]

RateLimitStore = Literal["local", "redis"]
"""Where a rate limit's bucket lives: in the process, or shared on Redis."""

# --------------------------------------------------------------------------------------------
# integration: policy defaults for every outbound call
# --------------------------------------------------------------------------------------------


class ConnectionPoolConfig(ConfigModel):
    """Connections to one upstream, kept open and reused."""

    min_connections: AtLeastZero = Field(
        default=2, description="Connections kept open while idle. Default 2."
    )
    max_connections: AtLeastOne = Field(
        default=10,
        description="Most connections open at once; must be >= min_connections. Default 10 "
        "(1000 for http connections and ai_model services: their bulkheads bound them).",
    )
    acquire_timeout: DurationSeconds = Field(
        default=10.0,
        description="How long a call waits for a free connection. Default 10s.",
    )
    idle_timeout: DurationSeconds = Field(
        default=300.0,
        description="Close connections above min_connections after this idle time. Default 5m.",
    )

    @field_validator("max_connections")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_connections")
        if low is not None and value < low:
            raise PydanticCustomError(
                "max_below_min", "must be >= min_connections ({low})", {"low": low}
            )
        return value


class ConnectionPoolsConfig(ConfigModel):
    """Pool settings; `default` applies to every service unless it sets `connection_pool`."""

    default: ConnectionPoolConfig = Field(
        default_factory=ConnectionPoolConfig, description="The pool every service starts from."
    )


class RetryPolicyConfig(ConfigModel):
    """Retries with exponential backoff, bounded by a retry budget (as in Envoy)."""

    max_retries: AtLeastZero = Field(
        default=3, description="Retries after the first attempt; 0 disables retry. Default 3."
    )
    base_delay: DurationSeconds = Field(
        default=1.0, description="Backoff before the first retry. Default 1s."
    )
    max_delay: DurationSeconds = Field(
        default=30.0,
        description="Cap on any single backoff; must be >= base_delay. Default 30s.",
    )
    backoff_multiplier: Multiplier = Field(
        default=2.0, description="Each backoff is the previous one times this. Default 2."
    )
    jitter: bool = Field(
        default=True,
        description="Randomise backoffs so many clients do not retry in lockstep. Default true.",
    )
    budget_ratio: Fraction = Field(
        default=0.2,
        description="Retries may add at most this fraction of extra load on top of first "
        "attempts, so retries cannot turn an outage into a retry storm. Default 0.2.",
    )
    budget_min_retries_per_second: float = Field(
        default=10.0,
        ge=0,
        description="Retries always allowed per second whatever the ratio, so low-traffic "
        "services can still retry. Default 10.",
    )

    @field_validator("max_delay")
    @classmethod
    def _max_not_below_base(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("base_delay")
        if base is not None and value < base:
            raise PydanticCustomError(
                "max_below_base", "must be >= base_delay ({base}s)", {"base": f"{base:g}"}
            )
        return value


class CircuitBreakerConfig(ConfigModel):
    """Stops calling an upstream that keeps failing, then probes it before trusting it again."""

    enabled: bool = Field(default=True, description="Whether the breaker runs. Default true.")
    failure_threshold: AtLeastOne = Field(
        default=5, description="Consecutive failures that open the breaker. Default 5."
    )
    reset_timeout: DurationSeconds = Field(
        default=30.0,
        description="The longest the breaker stays open before a half-open probe. The first "
        "break is min_reset_timeout; each time the breaker opens again straight from "
        "half-open the break doubles, up to this; once it closes the break starts short "
        "again. A health check that sees the upstream answer half-opens it at once. "
        "Default 30s.",
    )
    min_reset_timeout: DurationSeconds = Field(
        default=1.0,
        description="The first break after the breaker opens (capped by reset_timeout). "
        "Default 1s.",
    )
    monitoring_period: DurationSeconds = Field(
        default=10.0,
        description="Sliding window over which failure_ratio is measured. Default 10s.",
    )
    failure_ratio: Fraction = Field(
        default=0.5,
        description="Fraction of failed calls in the window that opens the breaker. Default 0.5.",
    )
    minimum_throughput: AtLeastOne = Field(
        default=20,
        description="Calls needed in the window before failure_ratio is judged, so two "
        "failures out of three calls do not open it. Default 20.",
    )
    half_open_max_calls: AtLeastOne = Field(
        default=1, description="Probe calls let through while half-open. Default 1."
    )
    slow_call_duration: DurationSeconds = Field(
        default=10.0,
        description="A call that takes this long is slow. One its caller gave up on (deadline "
        "passed, or cancelled) after waiting this long is also a failure, like a timeout, so "
        "a hung upstream opens the breaker even when every caller's deadline is shorter than "
        "timeouts.request; a caller giving up sooner is never counted. Default 1s for cache "
        "and pubsub services, 10s otherwise.",
    )
    slow_call_ratio: Fraction = Field(
        default=1.0,
        description="Fraction of slow calls in the window (once minimum_throughput calls are "
        "in it) that opens the breaker; 0 turns this rule off (calls cut off after "
        "slow_call_duration still count as failures). Default 1.0 (every call slow).",
    )


class RateLimitConfig(ConfigModel):
    """A token bucket for calls to one upstream, with a bounded queue of waiting calls."""

    requests_per_second: PositiveRate = Field(
        description="Sustained rate the bucket refills at. Required."
    )
    burst_size: AtLeastOne = Field(
        description="Bucket capacity: calls allowed at once after a quiet period. Required."
    )
    max_queue: AtLeastZero = Field(
        default=1000,
        description="Calls that may wait for a token; more are rejected with "
        "RESOURCE_EXHAUSTED. 0 rejects at once. Default 1000.",
    )
    store: RateLimitStore = Field(
        default="local",
        description="Where the bucket lives: local is per sidecar process (N pods allow N "
        "times the rate); redis is one bucket shared by every sidecar on the same Redis, so "
        "the limit holds for the whole deployment (if Redis is unreachable each sidecar "
        "limits locally until it is back). Default local.",
    )
    connection: ServiceName | None = Field(
        default=None,
        description="With store: redis, the name of a redis connection (under connections:) "
        "that holds the bucket, at sidecar:ratelimit:<limited service>; it runs on that "
        "connection's shared link and opens no connection of its own. Default null.",
    )
    redis_target: ServiceName | None = Field(
        default=None,
        validate_default=True,
        description="With store: redis and no connection, the name of a service with "
        "backend: redis whose connection holds the bucket (under that service's key_prefix, "
        "keyed by the limited service's name). Default null.",
    )

    @field_validator("redis_target")
    @classmethod
    def _redis_store_needs_target(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("store") == "redis" and not info.data.get("connection"):
            raise PydanticCustomError(
                "redis_target_missing",
                "store: redis needs redis_target (a service with backend: redis) or "
                "connection (a redis connection)",
            )
        return value


class RateLimitingConfig(ConfigModel):
    """Outbound rate limits."""

    default: RateLimitConfig | None = Field(
        default=None,
        description="Limit for every service that sets no rate_limit of its own; null means "
        "no outbound limit. Default null.",
    )


class BulkheadConfig(ConfigModel):
    """Caps concurrent calls to one upstream, so one slow upstream cannot take every task."""

    max_concurrent_calls: AtLeastOne = Field(
        default=100, description="Calls in flight at once. Default 100."
    )
    max_queued_calls: AtLeastZero = Field(
        default=100,
        description="Calls waiting for a slot; more are rejected with RESOURCE_EXHAUSTED. "
        "Default 100.",
    )


class TimeoutsConfig(ConfigModel):
    """Upper bounds for outbound calls; the caller's gRPC deadline can only shorten them."""

    connect: DurationSeconds = Field(
        default=10.0, description="Establishing a connection. Default 10s."
    )
    request: DurationSeconds = Field(
        default=30.0,
        description="One attempt: a Redis command, a SQL statement, an AI response's first "
        "chunk. Default 5s for cache and pubsub services, 30s otherwise.",
    )
    read: DurationSeconds = Field(
        default=30.0, description="Waiting for the next bytes of a response. Default 30s."
    )


class HealthMonitoringConfig(ConfigModel):
    """Background health checks that drive the per-service gRPC health status."""

    check_interval: DurationSeconds = Field(
        default=30.0, description="Time between checks of one service. Default 30s."
    )
    timeout: DurationSeconds = Field(default=5.0, description="Limit on one check. Default 5s.")
    consecutive_failures: AtLeastOne = Field(
        default=3,
        description="Failed checks in a row before the service is reported NOT_SERVING. Default 3.",
    )


class MetricsConfig(ConfigModel):
    """OpenTelemetry metrics."""

    enabled: bool = Field(default=True, description="Record metrics. Default true.")
    # Before export_interval, whose check reads it.
    otlp: OtlpConfig | None = Field(
        default=None,
        description="Push metrics to this OTLP receiver every export_interval; null pushes "
        "nothing. Default null.",
    )
    export_interval: DurationSeconds = Field(
        default=15.0,
        description="How often metrics are pushed to `otlp`; without `otlp` only the default "
        "is accepted (prometheus_listen is pulled when the scraper asks). Default 15s.",
    )
    retention_period: DurationSeconds = Field(
        default=7 * 86400.0,
        description="Accepted as the specification writes it (7d) and nothing else: the "
        "sidecar holds current values only; how long history is kept is the scraper's "
        "setting (Prometheus --storage.tsdb.retention.time). Default 7d.",
    )
    prometheus_listen: HostPort | None = Field(
        default=None,
        description="host:port to serve Prometheus /metrics on (e.g. 127.0.0.1:9464); null "
        "serves nothing. Default null.",
    )

    @field_validator("export_interval", "retention_period")
    @classmethod
    def _not_the_sidecars_to_set(cls, value: float, info: ValidationInfo) -> float:
        default = cls.model_fields[info.field_name or ""].default
        pushed = info.field_name == "export_interval" and info.data.get("otlp") is not None
        if value != default and not pushed:
            raise PydanticCustomError(
                "metrics_setting_not_applicable",
                "{name} is not the sidecar's to set: metrics are pulled from "
                "prometheus_listen, and history is kept by the scraper (set it there); only "
                "the default {default} is accepted",
                {"name": info.field_name, "default": "15s" if default == 15.0 else "7d"},
            )
        return value


class IntegrationConfig(ConfigModel):
    """Policy defaults applied to every service's outbound calls."""

    connection_pools: ConnectionPoolsConfig = Field(
        default_factory=ConnectionPoolsConfig, description="Connection pool defaults."
    )
    retry_policy: RetryPolicyConfig = Field(
        default_factory=RetryPolicyConfig, description="Retry defaults."
    )
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig, description="Circuit breaker defaults."
    )
    rate_limiting: RateLimitingConfig = Field(
        default_factory=RateLimitingConfig, description="Outbound rate limit defaults."
    )
    bulkhead: BulkheadConfig = Field(
        default_factory=BulkheadConfig, description="Concurrency limit defaults."
    )
    timeouts: TimeoutsConfig = Field(
        default_factory=TimeoutsConfig, description="Timeout defaults."
    )
    health_monitoring: HealthMonitoringConfig = Field(
        default_factory=HealthMonitoringConfig, description="Health check settings."
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics settings.")
    tracing: TracingConfig | None = Field(
        default=None, description="OpenTelemetry traces; null records none. Default null."
    )


# --------------------------------------------------------------------------------------------
# Per-service partial overrides: every field optional, null or absent means "inherit".
# --------------------------------------------------------------------------------------------

_INHERIT = "Inherited from integration when absent or null."


class ConnectionPoolOverride(ConfigModel):
    """Overrides `integration.connection_pools.default` for one service."""

    min_connections: AtLeastZero | None = Field(default=None, description=_INHERIT)
    max_connections: AtLeastOne | None = Field(default=None, description=_INHERIT)
    acquire_timeout: DurationSeconds | None = Field(default=None, description=_INHERIT)
    idle_timeout: DurationSeconds | None = Field(default=None, description=_INHERIT)


class RetryPolicyOverride(ConfigModel):
    """Overrides `integration.retry_policy` for one service."""

    max_retries: AtLeastZero | None = Field(default=None, description=_INHERIT)
    base_delay: DurationSeconds | None = Field(default=None, description=_INHERIT)
    max_delay: DurationSeconds | None = Field(default=None, description=_INHERIT)
    backoff_multiplier: Multiplier | None = Field(default=None, description=_INHERIT)
    jitter: bool | None = Field(default=None, description=_INHERIT)
    budget_ratio: Fraction | None = Field(default=None, description=_INHERIT)
    budget_min_retries_per_second: float | None = Field(default=None, ge=0, description=_INHERIT)


class CircuitBreakerOverride(ConfigModel):
    """Overrides `integration.circuit_breaker` for one service."""

    enabled: bool | None = Field(default=None, description=_INHERIT)
    failure_threshold: AtLeastOne | None = Field(default=None, description=_INHERIT)
    reset_timeout: DurationSeconds | None = Field(default=None, description=_INHERIT)
    min_reset_timeout: DurationSeconds | None = Field(default=None, description=_INHERIT)
    monitoring_period: DurationSeconds | None = Field(default=None, description=_INHERIT)
    failure_ratio: Fraction | None = Field(default=None, description=_INHERIT)
    minimum_throughput: AtLeastOne | None = Field(default=None, description=_INHERIT)
    half_open_max_calls: AtLeastOne | None = Field(default=None, description=_INHERIT)
    slow_call_duration: DurationSeconds | None = Field(default=None, description=_INHERIT)
    slow_call_ratio: Fraction | None = Field(default=None, description=_INHERIT)


class RateLimitOverride(ConfigModel):
    """Overrides `integration.rate_limiting.default` for one service.

    With no default to inherit from, `requests_per_second` and `burst_size` must both be set.
    """

    requests_per_second: PositiveRate | None = Field(default=None, description=_INHERIT)
    burst_size: AtLeastOne | None = Field(default=None, description=_INHERIT)
    max_queue: AtLeastZero | None = Field(default=None, description=_INHERIT)
    store: RateLimitStore | None = Field(default=None, description=_INHERIT)
    connection: ServiceName | None = Field(default=None, description=_INHERIT)
    redis_target: ServiceName | None = Field(default=None, description=_INHERIT)


class BulkheadOverride(ConfigModel):
    """Overrides `integration.bulkhead` for one service."""

    max_concurrent_calls: AtLeastOne | None = Field(default=None, description=_INHERIT)
    max_queued_calls: AtLeastZero | None = Field(default=None, description=_INHERIT)


class TimeoutsOverride(ConfigModel):
    """Overrides `integration.timeouts` for one service."""

    connect: DurationSeconds | None = Field(default=None, description=_INHERIT)
    request: DurationSeconds | None = Field(default=None, description=_INHERIT)
    read: DurationSeconds | None = Field(default=None, description=_INHERIT)


# --------------------------------------------------------------------------------------------
# Defaults that depend on the service type
# --------------------------------------------------------------------------------------------

_REDIS_DEFAULTS: Mapping[str, Mapping[str, float]] = {
    # A Redis command answers in well under a millisecond: one that has not answered in 5 s
    # is lost, and calls that all take 1 s mean a hung server or a black-holed network.
    "timeouts": {"request": 5.0},
    "circuit_breaker": {"slow_call_duration": 1.0},
}

_HTTP_DEFAULTS: Mapping[str, Mapping[str, float]] = {
    # Concurrency on an HTTP connection is bounded by each service's bulkhead: the pool only
    # has to never be the limit (one streamed AI answer holds a connection throughout).
    "connection_pool": {"max_connections": 1000},
}

SERVICE_TYPE_DEFAULTS: Mapping[str, Mapping[str, Mapping[str, float]]] = {
    "cache": _REDIS_DEFAULTS,
    "pubsub": _REDIS_DEFAULTS,
    "ai_model": _HTTP_DEFAULTS,  # its own (implicit) http connection's pool
    "api": _HTTP_DEFAULTS,
    "graphql": _HTTP_DEFAULTS,
    # A Receive long-polls for up to 20 s: an idle queue's empty polls are not slow calls.
    "queue": {"circuit_breaker": {"slow_call_duration": 30.0}},
}
"""service type -> policy section -> field -> the default for that type. Types not listed
(sql, ai_alias, ...) keep the `integration:` models' own defaults."""

CONNECTION_TYPE_DEFAULTS: Mapping[str, Mapping[str, Mapping[str, float]]] = {
    "http": _HTTP_DEFAULTS,
}
"""connection type -> policy section -> field -> the default for a connection of that type
under `connections:`, where `integration:` leaves the field unset."""

_Section = TypeVar("_Section", bound=BaseModel)


def with_service_type_defaults(section: str, service_type: str, inherited: _Section) -> _Section:
    """`inherited` (a section of `integration:`) with the service type's own defaults for
    the fields `integration:` leaves unset; the service's override is merged over this."""
    return _with_defaults(SERVICE_TYPE_DEFAULTS.get(service_type, {}).get(section, {}), inherited)


def with_connection_type_defaults(
    section: str, connection_type: str, inherited: _Section
) -> _Section:
    """`inherited` with a connection type's own defaults for the fields `integration:` leaves
    unset; the connection's override is merged over this."""
    defaults = CONNECTION_TYPE_DEFAULTS.get(connection_type, {}).get(section, {})
    return _with_defaults(defaults, inherited)


def _with_defaults(defaults: Mapping[str, float], inherited: _Section) -> _Section:
    unset = {
        name: value for name, value in defaults.items() if name not in inherited.model_fields_set
    }
    return inherited.model_copy(update=unset) if unset else inherited
