"""The whole configuration, `Config`, and each service's merged policies, `ServicePolicies`.

The sections live in their own modules: `server` (the `server:` models), `policies` (the
`integration:` models and the per-service partial overrides) and the `services` package (one
model per service type). Every class and field is named after its YAML key, so
`integration.retry_policy.max_delay` in the file is `config.integration.retry_policy.max_delay`
in Python, and every field has a default, so an empty file (or no file) starts a working
sidecar.

Every service may override the `integration:` policies partially (`retry_policy: {max_retries:
5}` keeps every other retry setting); `Config.policies_for(name)` returns the merged result,
computed and validated once when the config is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from ._by_type import rebased
from ._common import ConfigModel, ServiceName
from .backends import BACKEND_CONNECTIONS
from .connections import ConnectionConfig
from .policies import (
    BulkheadConfig,
    CircuitBreakerConfig,
    ConnectionPoolConfig,
    IntegrationConfig,
    RateLimitConfig,
    RetryPolicyConfig,
    TimeoutsConfig,
    with_connection_type_defaults,
    with_service_type_defaults,
)
from .server import ServerConfig
from .services import ServiceConfig, ServiceModel, default_services
from .transform import SchemaConfig, TransformConfig, transform_reference_errors

__all__ = ["Config", "ServicePolicies"]


@dataclass(frozen=True, slots=True)
class ServicePolicies:
    """The policies one service runs with: its overrides merged over `integration:`."""

    retry_policy: RetryPolicyConfig
    circuit_breaker: CircuitBreakerConfig
    rate_limit: RateLimitConfig | None
    bulkhead: BulkheadConfig
    timeouts: TimeoutsConfig
    connection_pool: ConnectionPoolConfig


_M = TypeVar("_M", bound=BaseModel)


class Config(ConfigModel):
    """The sidecar's whole configuration; `Config()` is the no-config-file default."""

    server: ServerConfig = Field(default_factory=ServerConfig, description="The gRPC server.")
    integration: IntegrationConfig = Field(
        default_factory=IntegrationConfig, description="Policy defaults for outbound calls."
    )
    connections: Mapping[ServiceName, ConnectionConfig] = Field(
        default_factory=dict,
        description="Named upstream endpoints (type: redis), each with one client shared by "
        "every service that names it (connection: <name>). Default none: services with "
        "inline settings get a connection of their own.",
    )
    services: Mapping[ServiceName, ServiceConfig] = Field(
        default_factory=default_services,
        description="Named service instances. When absent: an in-memory cache named cache and "
        "an in-memory pubsub named pubsub.",
    )
    schemas: Mapping[ServiceName, SchemaConfig] = Field(
        default_factory=dict, description="Named JSON Schemas (draft 2020-12). Default none."
    )
    transforms: Mapping[ServiceName, TransformConfig] = Field(
        default_factory=dict,
        description="Named chains of conversions and validations. Default none.",
    )

    _policies: dict[str, ServicePolicies] = PrivateAttr(default_factory=dict)
    _inline_secrets: tuple[str, ...] = PrivateAttr(default=())

    @property
    def inline_secrets(self) -> tuple[str, ...]:
        """Paths of the secret settings the file wrote inline instead of as `${VAR}` (set
        by the loader; the server warns about each at start-up)."""
        return self._inline_secrets

    @field_validator("services", mode="before")
    @classmethod
    def _spec_service_types(cls, services: Any) -> Any:
        """`type: database` (the specification's word) is an SQL service, on PostgreSQL
        unless it names another backend."""
        if not isinstance(services, Mapping):
            return services
        return {
            name: {"backend": "postgres", **service, "type": "sql"}
            if isinstance(service, Mapping) and service.get("type") == "database"
            else service
            for name, service in services.items()
        }

    @field_validator("services", mode="before")
    @classmethod
    def _backend_of_named_connection(cls, services: Any, info: ValidationInfo) -> Any:
        """A service naming a connection without saying `backend:` runs on the one backend
        of its type that uses that connection type (`type: sql, connection: orders-pg` on a
        postgres connection is `backend: postgres`; `type: objectstore, connection: aws` on
        the implicit connection of the `type: cloud` service `aws` is `backend: s3`)."""
        connections = info.data.get("connections")
        if not isinstance(services, Mapping) or not isinstance(connections, Mapping):
            return services
        inferred = dict(services)
        for name, service in services.items():
            if not isinstance(service, Mapping) or "backend" in service:
                continue
            kind, named = service.get("type"), service.get("connection")
            if not isinstance(named, str) or kind not in _MODELS_WITH_BACKEND:
                continue
            connection = connections.get(named)
            on_type = connection.type if connection is not None else _implicit_type(services, named)
            backends = [
                backend
                for (service_type, backend), on in BACKEND_CONNECTIONS.items()
                if service_type == kind and on == on_type
            ]
            if len(backends) == 1:
                inferred[name] = {**service, "backend": backends[0]}
        return inferred

    @field_validator("services")
    @classmethod
    def _one_default_per_type(
        cls, services: Mapping[str, ServiceConfig]
    ) -> Mapping[str, ServiceConfig]:
        marked: dict[str, list[str]] = {}
        for name, service in services.items():
            if service.default:
                marked.setdefault(service.type, []).append(name)
        clashes = [
            f"{len(names)} {kind} services have default: true ({', '.join(names)})"
            for kind, names in marked.items()
            if len(names) > 1
        ]
        if clashes:
            raise PydanticCustomError(
                "duplicate_default",
                "{clashes}; at most one per type may",
                {"clashes": "; ".join(clashes)},
            )
        return services

    @model_validator(mode="after")
    def _resolve_policies(self) -> Config:
        """Merge every service's overrides now, so a bad combination fails at load time.

        Runs only once every field is valid; the problems it finds (say a service raising
        `min_connections` above the inherited `max_connections`) are reported at the path of
        the service's override.
        """
        errors: list[InitErrorDetails] = []
        resolved: dict[str, ServicePolicies] = {}
        for name, service in self.services.items():
            try:
                resolved[name] = _resolve(self.integration, service, (name,), errors)
            except _Unresolved:
                continue
        errors += _redis_target_errors(self.services, resolved)
        errors += _connection_reference_errors(self.connections, self.services, resolved)
        errors += _alias_reference_errors(self.services)
        errors += transform_reference_errors(self.transforms, self.schemas, self.services)
        errors += _dead_letter_reference_errors(self.services)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        self._policies = resolved
        return self

    def policies_for(self, service_name: str) -> ServicePolicies:
        """The fully resolved policies of one service.

        Raises:
            KeyError: no service has that name.
        """
        try:
            return self._policies[service_name]
        except KeyError:
            raise KeyError(f"no service named {service_name!r}") from None

    def connection_policies(self, name: str) -> tuple[ConnectionPoolConfig, TimeoutsConfig]:
        """The pool and timeouts of the connection called `name`: its overrides merged over
        `integration:` (a service's implicit connection has the service's own).

        Raises:
            KeyError: no connection or service has that name.
        """
        connection = self.connections.get(name)
        if connection is None:
            policies = self.policies_for(name)
            return policies.connection_pool, policies.timeouts
        pool = with_connection_type_defaults(
            "connection_pool", connection.type, self.integration.connection_pools.default
        )
        timeouts = self.integration.timeouts
        if connection.connection_pool is not None:
            pool = type(pool).model_validate(
                {**pool.model_dump(), **connection.connection_pool.model_dump(exclude_none=True)}
            )
        if connection.timeouts is not None:
            timeouts = type(timeouts).model_validate(
                {**timeouts.model_dump(), **connection.timeouts.model_dump(exclude_none=True)}
            )
        return pool, timeouts

    def connection_of(self, service_name: str) -> str | None:
        """The connection a service uses (a `backend: redis` service, a `cloud` account):
        the one it names, else its own implicit one (named like the service); None for
        services on no connection."""
        service = self.services[service_name]
        if connection_type(service) is None:
            return None
        named: str | None = getattr(service, "connection", None)
        return named or service_name

    def default_service(self, type_name: str) -> str | None:
        """The service that answers requests with an empty `target` for a service type.

        In order: the one marked `default: true`; else the only service of that type; else the
        one named like the type (`cache`); else None, and the caller must name a target.
        """
        names = [name for name, service in self.services.items() if service.type == type_name]
        for name in names:
            if self.services[name].default:
                return name
        if len(names) == 1:
            return names[0]
        if type_name in names:
            return type_name
        return None


def _implicit_type(services: Mapping[str, Any], name: str) -> str | None:
    """The type of the connection a service's inline settings make (before validation), if
    `name` is a service that makes one."""
    service = services.get(name)
    if not isinstance(service, Mapping) or service.get("connection") is not None:
        return None
    model = _MODEL_BY_TYPE.get(service.get("type"))
    if model is None:
        return None
    backend = service.get("backend") or service.get("provider")
    for field in ("backend", "provider"):
        declared = model.model_fields.get(field)
        if backend is None and declared is not None and isinstance(declared.default, str):
            backend = declared.default
    if not isinstance(backend, str):
        return None
    return BACKEND_CONNECTIONS.get((str(model.model_fields["type"].default), backend))


_MODEL_BY_TYPE: dict[object, type[BaseModel]] = {
    model.model_fields["type"].default: model for model in get_args(ServiceModel)
}

_MODELS_WITH_BACKEND = frozenset(
    model.model_fields["type"].default
    for model in get_args(ServiceModel)
    if isinstance(model.model_fields.get("backend"), FieldInfo)
)
"""The service types whose model has a `backend:` field."""


class _Unresolved(Exception):
    """A service's policies could not be merged; the reasons are already in `errors`."""


def _resolve(
    integration: IntegrationConfig,
    service: ServiceConfig,
    where: tuple[str],
    errors: list[InitErrorDetails],
) -> ServicePolicies:
    failed = False

    def merge(field: str, base: _M, override: BaseModel | None) -> _M:
        nonlocal failed
        base = with_service_type_defaults(field, service.type, base)
        if override is None:
            return base
        changes = override.model_dump(exclude_none=True)
        if not changes:
            return base
        try:
            return type(base).model_validate({**base.model_dump(), **changes})
        except ValidationError as error:
            failed = True
            errors.extend(rebased(error, ("services", *where, field)))
            return base

    rate_limit: RateLimitConfig | None = integration.rate_limiting.default
    if service.rate_limit is not None:
        if rate_limit is None:
            try:
                rate_limit = RateLimitConfig.model_validate(
                    service.rate_limit.model_dump(exclude_none=True)
                )
            except ValidationError as error:
                failed = True
                errors.extend(rebased(error, ("services", *where, "rate_limit")))
        else:
            rate_limit = merge("rate_limit", rate_limit, service.rate_limit)
    elif "rate_limit" in service.model_fields_set:
        rate_limit = None  # explicit null: this service opts out of the inherited limit

    policies = ServicePolicies(
        retry_policy=merge("retry_policy", integration.retry_policy, service.retry_policy),
        circuit_breaker=merge(
            "circuit_breaker", integration.circuit_breaker, service.circuit_breaker
        ),
        rate_limit=rate_limit,
        bulkhead=merge("bulkhead", integration.bulkhead, service.bulkhead),
        timeouts=merge("timeouts", integration.timeouts, service.timeouts),
        connection_pool=merge(
            "connection_pool", integration.connection_pools.default, service.connection_pool
        ),
    )
    if failed:
        raise _Unresolved
    return policies


def _alias_reference_errors(services: Mapping[str, ServiceConfig]) -> list[InitErrorDetails]:
    """An `ai_alias` must name configured `ai_model` services and, for its response cache,
    a configured `cache` service, so `check-config` finds a dangling reference too."""
    errors: list[InitErrorDetails] = []

    def refused(where: tuple[str | int, ...], name: str, kind: str) -> None:
        errors.append(
            InitErrorDetails(
                type=PydanticCustomError(
                    "unknown_reference",
                    "{name} is not a configured {kind} service",
                    {"name": repr(name), "kind": kind},
                ),
                loc=where,
                input=name,
            )
        )

    for alias, service in services.items():
        if service.type != "ai_alias":
            continue
        for index, deployment in enumerate(getattr(service, "deployments", ())):
            target = services.get(deployment.service)
            if target is None or target.type != "ai_model":
                where = ("services", alias, "deployments", index, "service")
                refused(where, deployment.service, "ai_model")
        cache = getattr(service, "cache", None)
        if cache is not None:
            target = services.get(cache.target)
            if target is None or target.type != "cache":
                refused(("services", alias, "cache", "target"), cache.target, "cache")
    return errors


def _dead_letter_reference_errors(
    services: Mapping[str, ServiceConfig],
) -> list[InitErrorDetails]:
    """A memory queue's `dead_letter` must name another memory queue of the same kind (FIFO
    or standard), so `check-config` finds the mistake, not only start-up."""
    errors: list[InitErrorDetails] = []
    for name, service in services.items():
        dead_letter = getattr(service, "dead_letter", None)
        if service.type != "queue" or dead_letter is None:
            continue
        target = services.get(dead_letter)
        if target is None or target.type != "queue" or getattr(target, "backend", "") != "memory":
            problem = "{name} is not a configured queue service with backend: memory"
        elif dead_letter == name:
            problem = "{name} is this queue itself; a dead-letter queue must be another one"
        elif getattr(target, "fifo", False) != getattr(service, "fifo", False):
            problem = "{name} must be a FIFO queue exactly when this queue is one"
        else:
            continue
        errors.append(
            InitErrorDetails(
                type=PydanticCustomError(
                    "dead_letter_reference", problem, {"name": repr(dead_letter)}
                ),
                loc=("services", name, "dead_letter"),
                input=dead_letter,
            )
        )
    return errors


def _redis_target_errors(
    services: Mapping[str, ServiceConfig], resolved: Mapping[str, ServicePolicies]
) -> list[InitErrorDetails]:
    """A rate limit with `store: redis` must name a service with `backend: redis`.

    Reported where the `redis_target` was written: the service's override, or once for the
    inherited `integration.rate_limiting.default`.
    """
    errors: dict[tuple[str, ...], InitErrorDetails] = {}
    for name, policies in resolved.items():
        limit = policies.rate_limit
        if limit is None or limit.store != "redis" or limit.connection is not None:
            continue
        target = services.get(limit.redis_target or "")
        if target is not None and getattr(target, "backend", None) == "redis":
            continue
        override = services[name].rate_limit
        where: tuple[str, ...] = (
            ("services", name, "rate_limit", "redis_target")
            if override is not None and override.redis_target is not None
            else ("integration", "rate_limiting", "default", "redis_target")
        )
        errors[where] = InitErrorDetails(
            type=PydanticCustomError(
                "redis_target_not_redis",
                "{target} is not a service with backend: redis",
                {"target": repr(limit.redis_target)},
            ),
            loc=where,
            input=limit.redis_target,
        )
    return list(errors.values())


def connection_type(service: ServiceConfig) -> str | None:
    """The type of connection a service runs on, or None (memory backends, ...)."""
    return BACKEND_CONNECTIONS.get((service.type, getattr(service, "backend", "")))


def _connection_reference_errors(
    connections: Mapping[str, ConnectionConfig],
    services: Mapping[str, ServiceConfig],
    resolved: Mapping[str, ServicePolicies],
) -> list[InitErrorDetails]:
    """Every `connection:` names a configured connection of the right type, and no service's
    implicit connection takes the name of a configured one."""
    errors: list[InitErrorDetails] = []

    def refused(where: tuple[str, ...], name: str, message: str) -> None:
        errors.append(
            InitErrorDetails(
                type=PydanticCustomError("unknown_connection", message, {"name": repr(name)}),
                loc=where,
                input=name,
            )
        )

    redis = sorted(name for name, c in connections.items() if c.type == "redis")
    for name, service in services.items():
        kind = connection_type(service)
        if kind is None:
            named = getattr(service, "connection", None)
            if named is not None:
                refused(
                    ("services", name, "connection"),
                    named,
                    "backend "
                    + repr(getattr(service, "backend", service.type))
                    + " talks to no connection; set the backend that runs on {name}",
                )
            continue
        named = getattr(service, "connection", None)
        # A service's inline settings make a connection named like it, which others may name.
        of_kind = sorted(
            [other for other, c in connections.items() if c.type == kind]
            + [
                other
                for other, peer in services.items()
                if other != name
                and connection_type(peer) == kind
                and getattr(peer, "connection", None) is None
            ]
        )
        if named is None and name in connections:
            refused(
                ("services", name),
                name,
                "{name} has inline settings, which make a connection named like the "
                "service, but connections: has one of that name; name it with connection:",
            )
        elif named is not None and named not in of_kind:
            refused(
                ("services", name, "connection"),
                named,
                "{name} is not a configured "
                + kind
                + " connection ("
                + (", ".join(of_kind) or "none configured")
                + ")",
            )
        elif named is not None and service.connection_pool is not None:
            refused(
                ("services", name, "connection_pool"),
                named,
                "the pool belongs to connection {name}, shared by its services: set "
                "connection_pool under connections." + named,
            )
    for name, policies in resolved.items():
        limit = policies.rate_limit
        if limit is None or limit.store != "redis" or limit.connection is None:
            continue
        if limit.connection not in redis:
            override = services[name].rate_limit
            where: tuple[str, ...] = (
                ("services", name, "rate_limit", "connection")
                if override is not None and override.connection is not None
                else ("integration", "rate_limiting", "default", "connection")
            )
            refused(where, limit.connection, "{name} is not a configured redis connection")
    for name, service in services.items():
        # AI budgets (`ai_model` and `ai_alias` rate_limit) may live on a redis connection.
        budget = getattr(service, "limits", None) if service.type.startswith("ai_") else None
        named = getattr(budget, "connection", None)
        if named is not None and named not in redis:
            refused(
                ("services", name, "rate_limit", "connection"),
                named,
                "{name} is not a configured redis connection",
            )
    return errors
