"""Build one live integration per configured service: its backend, the resilience pipeline
guarding it, and the lookup by target name that servicers use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry.metrics import Meter

from sidecar.backends.registry import BuiltBackend, build_backend
from sidecar.backends.spec import BuildContext, PipelineOwner
from sidecar.config import Config, ServiceConfig
from sidecar.connections import Connections, build_connections
from sidecar.errors import NotFound
from sidecar.observability.message_counts import MessageCounts
from sidecar.resilience import (
    SYSTEM_CLOCK,
    CircuitState,
    Clock,
    Pipeline,
    PipelineSnapshot,
    RateLimiter,
    StreamingSnapshot,
)
from sidecar.runtime.classify import classify
from sidecar.runtime.health_check import HealthCheck
from sidecar.runtime.policies import pipeline_options, token_bucket_options
from sidecar.transform import Transforms, build_transforms

__all__ = ["Integration", "Integrations", "build_integrations"]

B = TypeVar("B")
_log = logging.getLogger("sidecar.runtime")
_STREAMING_TYPES = frozenset({"ai_model", "ai_alias"})
"""Service types whose calls run through `sidecar.ai` (one streaming pipeline per
deployment), never through a pipeline of the service itself."""


@dataclass(eq=False)
class Integration(Generic[B]):
    """One configured service instance, ready to serve calls."""

    name: str
    type: str
    backend_name: str
    backend: B
    pipeline: Pipeline | None
    """The unary pipeline every call to the backend runs through; None for `ai_model` and
    `ai_alias` services, whose calls run through their deployments' streaming pipelines
    (kept by the backend, a `PipelineOwner`: `pipelines()`, `snapshot()`, `breaker_states()`)."""
    settings: Any
    is_default: bool
    features: frozenset[str] = frozenset()
    """What the backend can do beyond its capability's core (optional families, ...)."""
    healthy: bool = True
    connection: str | None = None
    """The connection the service is on (its health is the connection's), if any."""

    def snapshot(self) -> PipelineSnapshot | None:
        """The policies that really guard the integration's calls, or None if none do: its
        pipeline's, or for an `ai_model` its deployment with the worst breaker (an
        `ai_alias` has none of its own)."""
        if isinstance(self.backend, PipelineOwner):
            return self.backend.snapshot()
        return self.pipeline.snapshot() if self.pipeline is not None else None

    def deployment_snapshots(self) -> list[StreamingSnapshot]:
        """For an `ai_model`, every deployment's own pipeline, sorted by name; else none."""
        if isinstance(self.backend, PipelineOwner):
            return self.backend.deployment_snapshots()
        return []


class Integrations:
    """The integrations by name, with the default instance of each capability type."""

    def __init__(
        self,
        items: Sequence[Integration[Any]],
        *,
        clock: Clock = SYSTEM_CLOCK,
        connections: Connections | None = None,
        transforms: Transforms | None = None,
    ) -> None:
        self.clock = clock
        self.transforms = transforms or Transforms({}, {})
        """The configured transforms and schemas, which services apply by name."""
        self.connections = connections or Connections()
        """The connections the services share; closed after them."""
        """The clock every pipeline runs on; servicers that build policies of their own
        (AI deployments) use it too, so tests move one clock."""
        self.meter: Meter | None = None
        """The server's OpenTelemetry meter once it has one (None: metrics are off)."""
        self.messages = MessageCounts()
        """Pub/sub messages delivered, acknowledged, ... per service (for metrics)."""
        self.health_checks: dict[str, HealthCheck] = {}
        """The last health check of each integration (by name) and connection (by
        `connection:<name>`), as AdminService shows them."""
        self._by_name = {item.name: item for item in items}
        self._defaults = {item.type: item for item in items if item.is_default}
        self._by_type_and_name = {(item.type, item.name): item for item in items}

    def resolve(self, type_name: str, target: str) -> Integration[Any]:
        """The integration of `type_name` called `target` (empty: the default one).

        Raises:
            NotFound: no such integration of that type is configured (TARGET_NOT_FOUND).
        """
        found = (
            self._by_type_and_name.get((type_name, target))
            if target
            else self._defaults.get(type_name)
        )
        if found is None:
            shown = target or "(default)"
            raise NotFound(
                f"no {type_name} integration named {shown!r} is configured",
                reason="TARGET_NOT_FOUND",
                metadata={"target": shown, "type": type_name},
            )
        return found

    def get(self, name: str) -> Integration[Any] | None:
        """The integration called `name`, of any type."""
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Integration[Any]]:
        return iter(sorted(self._by_name.values(), key=lambda item: item.name))

    def __len__(self) -> int:
        return len(self._by_name)

    def breaker_states(self) -> list[tuple[str, CircuitState]]:
        """(name, breaker state) of every breaker that runs: each integration's pipeline's,
        and each AI deployment's (named `service/model`)."""
        states: list[tuple[str, CircuitState]] = []
        for item in self._by_name.values():
            if isinstance(item.backend, PipelineOwner):
                states.extend(item.backend.breaker_states())
            elif item.pipeline is not None and item.pipeline.circuit_breaker is not None:
                states.append((item.name, item.pipeline.circuit_breaker.state))
        return states

    def types(self) -> set[str]:
        """Capability types with at least one integration."""
        return {item.type for item in self._by_name.values()}

    async def close(self) -> None:
        """Close every backend, then every connection; one failing close does not stop the
        others."""
        results = await asyncio.gather(
            *(item.backend.close() for item in self._by_name.values()), return_exceptions=True
        )
        for item, result in zip(self._by_name.values(), results, strict=True):
            if isinstance(result, BaseException):
                _log.warning(
                    "closing integration failed",
                    extra={"integration": item.name, "error": repr(result)},
                )
        await self.connections.close()


def build_integrations(config: Config, clock: Clock = SYSTEM_CLOCK) -> Integrations:
    """Create every configured backend and its pipeline (no network I/O happens here)."""
    items: list[Integration[Any]] = []
    defaults = {
        type_name: config.default_service(type_name)
        for type_name in {service.type for service in config.services.values()}
    }
    connections = build_connections(config)
    backends = {
        name: _build(name, service, config, connections, clock)
        for name, service in config.services.items()
    }
    for name, service in config.services.items():
        pipeline = None
        if service.type not in _STREAMING_TYPES:
            pipeline = Pipeline(
                name,
                pipeline_options(config.policies_for(name)),
                clock=clock,
                classify=classify,
                rate_limiter=_shared_rate_limiter(name, config, connections, clock),
            )
        items.append(
            Integration(
                name=name,
                type=service.type,
                backend_name=service.backend,
                backend=backends[name].backend,
                features=backends[name].features,
                pipeline=pipeline,
                settings=service,
                is_default=defaults.get(service.type) == name,
                connection=config.connection_of(name),
            )
        )
    return Integrations(
        items, clock=clock, connections=connections, transforms=build_transforms(config)
    )


def _build(
    name: str, service: ServiceConfig, config: Config, connections: Connections, clock: Clock
) -> BuiltBackend:
    """The backend of one service: AI services are composed by `sidecar.ai` (routing over
    deployments), every other one by its backend's spec."""
    policies = config.policies_for(name)
    used = config.connection_of(name)
    connection = connections.get(used) if used is not None else None
    if service.type == "ai_model":
        from sidecar.ai.build import model_service

        built = model_service(
            service,
            policies,
            pipeline_options(policies),
            connection,
            budgets=_budget_store(name, service.limits.connection, connections),
        )
        return BuiltBackend(built, frozenset())
    if service.type == "ai_alias":
        from sidecar.ai.build import alias_service

        limits = service.limits
        budgets = _budget_store(name, limits.connection if limits else None, connections)
        built_alias = alias_service(service, pipeline_options(policies), budgets)
        return BuiltBackend(built_alias, frozenset())
    return build_backend(BuildContext(name, service, policies, connection, clock))


def _budget_store(service: str, name: str | None, connections: Connections) -> Any:
    """The redis connection an AI service's `rate_limit.connection` names, if any.

    Raises:
        ValueError: It names no configured redis connection.
    """
    if name is None:
        return None
    try:
        connection = connections.get(name)
    except KeyError:
        connection = None
    if connection is None or connection.type != "redis":
        raise ValueError(
            f"services.{service}.rate_limit.connection: {name!r} is not a configured redis "
            "connection (under connections:)"
        )
    return connection


def _shared_rate_limiter(
    name: str, config: Config, connections: Connections, clock: Clock
) -> RateLimiter | None:
    """The Redis token bucket of a `store: redis` limit, else None (the pipeline builds a
    local one from its options).

    It runs on the named connection's shared link (or that of the `redis_target` service)
    and its key derives from the limited service's name, so every sidecar of a deployment
    shares it.
    """
    limit = config.policies_for(name).rate_limit
    if limit is None or limit.store != "redis":
        return None
    from sidecar.backends.ratelimit.redis import RedisTokenBucket
    from sidecar.connections.redis import RedisConnection

    if limit.connection is not None:
        connection, prefix = limit.connection, ""
    elif limit.redis_target is not None:
        connection = config.connection_of(limit.redis_target) or limit.redis_target
        prefix = getattr(config.services[limit.redis_target], "key_prefix", "")
    else:
        return None
    redis = connections.get(connection)
    assert isinstance(redis, RedisConnection)
    return RedisTokenBucket(
        redis,
        f"{prefix}sidecar:ratelimit:{name}",
        token_bucket_options(limit),
        clock=clock,
        name=name,
    )
