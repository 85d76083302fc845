"""`ServiceBase`: what every service type shares, whatever its `type`.

A service type is a model that subclasses `ServiceBase` and adds:

- `type: Literal["<type>"] = Field(default="<type>", description="Service type.")`, the tag
  of the `ServiceConfig` discriminated union;
- `backend: Literal[...]`, which `sidecar.backends.registry` uses with `type` to pick the
  factory that builds the service;
- its own settings, each with a default and a `description=` that states it.

See `sidecar.config.services` for how to register the new model.
"""

from __future__ import annotations

from pydantic import Field

from .._common import ConfigModel
from ..policies import (
    BulkheadOverride,
    CircuitBreakerOverride,
    ConnectionPoolOverride,
    RateLimitOverride,
    RetryPolicyOverride,
    TimeoutsOverride,
)

__all__ = ["ServiceBase"]


class ServiceBase(ConfigModel):
    """Settings every service type shares: the default flag and the policy overrides."""

    default: bool = Field(
        default=False,
        description="Serve requests with an empty target for this service type; at most one "
        "service per type may set it. Default false.",
    )
    retry_policy: RetryPolicyOverride | None = Field(
        default=None, description="Partial override of integration.retry_policy."
    )
    circuit_breaker: CircuitBreakerOverride | None = Field(
        default=None, description="Partial override of integration.circuit_breaker."
    )
    rate_limit: RateLimitOverride | None = Field(
        default=None,
        description="Partial override of integration.rate_limiting.default; an explicit null "
        "turns an inherited limit off for this service.",
    )
    bulkhead: BulkheadOverride | None = Field(
        default=None, description="Partial override of integration.bulkhead."
    )
    timeouts: TimeoutsOverride | None = Field(
        default=None, description="Partial override of integration.timeouts."
    )
    connection_pool: ConnectionPoolOverride | None = Field(
        default=None, description="Partial override of integration.connection_pools.default."
    )
