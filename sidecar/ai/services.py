"""The backend objects of the two AI service types, built once per service from its config.

- `ModelService` (an `ai_model` service): the provider client plus everything the router
  needs to run a deployment on it: default model and sampling defaults, per-deployment
  limits, timeouts, breaker and retry settings. Every deployment (`service/model`) made on
  this service gets its own breaker and its own buckets sized from these settings.
- `AliasService` (an `ai_alias` service): the ordered deployments of a model alias, its
  retry settings and its optional response cache.

Both are plain frozen settings with `ping()`/`close()`, so the runtime treats them like any
other backend (health monitoring, shutdown); no config or protobuf type appears here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.backends.ai.base import ChatProvider, UpstreamTimeouts
from sidecar.resilience import CircuitBreakerOptions, RetryOptions

__all__ = ["AliasService", "DeploymentRef", "ModelDefaults", "ModelService", "TokenLimits"]


@dataclass(frozen=True, slots=True)
class ModelDefaults:
    """Sampling settings a request gets when it sets none (the spec's 0.7 and 2048)."""

    temperature: float | None = 0.7
    top_p: float | None = None
    max_tokens: int | None = 2048


@dataclass(frozen=True, slots=True)
class TokenLimits:
    """Per-deployment limits; None turns a limit off.

    Attributes:
        requests_per_minute: Requests started per minute (bucket of one minute's worth).
        tokens_per_minute: Tokens per minute: each call reserves its prompt estimate plus
            max_tokens up front and settles with the real usage afterwards.
        max_queue: Calls that may wait in line for each bucket.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_queue: int = 1000


@dataclass(frozen=True)
class ModelService:
    """An `ai_model` service: a provider client and how its deployments run.

    Attributes:
        provider: The client, shared by every deployment of the service.
        model: The model a bare `target: <service>` uses.
        models: Models a `service/model` target may name; empty allows any.
        defaults: Sampling defaults.
        limits: Limits of each deployment.
        timeouts: Connect and read (gap between chunks) timeouts of each request.
        first_chunk_timeout: Seconds an attempt may take to produce its first chunk before
            the next deployment is tried (`timeouts.request`); None waits for the deadline.
        circuit_breaker: Breaker of each deployment; None turns breakers off.
        retry: Retry rounds for targets naming this service directly; None tries once.
        coalesce: Merge chunks that pile up while a write to the caller is in flight.
    """

    provider: ChatProvider
    model: str
    models: tuple[str, ...] = ()
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    limits: TokenLimits = field(default_factory=TokenLimits)
    timeouts: UpstreamTimeouts = field(default_factory=UpstreamTimeouts)
    first_chunk_timeout: float | None = 30.0
    circuit_breaker: CircuitBreakerOptions | None = field(default_factory=CircuitBreakerOptions)
    retry: RetryOptions | None = None
    coalesce: bool = True

    async def ping(self) -> None:
        """Probe the upstream (health monitoring)."""
        await self.provider.ping()

    async def close(self) -> None:
        """Close the provider's client."""
        await self.provider.close()


@dataclass(frozen=True, slots=True)
class DeploymentRef:
    """One deployment of an alias: an `ai_model` service and a model (None: its default)."""

    service: str
    model: str | None = None


@dataclass(frozen=True)
class AliasService:
    """An `ai_alias` service: deployments tried in order, retries, and the response cache.

    Attributes:
        deployments: Tried in this order; the next is tried on UNAVAILABLE,
            RESOURCE_EXHAUSTED, an open circuit or a timeout, never after the first chunk.
        retry: Rounds over all deployments after every one failed; None tries once.
        cache_target: The `cache` service storing deterministic answers; None: no cache.
        cache_ttl: Seconds a cached answer lives.
    """

    deployments: tuple[DeploymentRef, ...]
    retry: RetryOptions | None = None
    cache_target: str | None = None
    cache_ttl: float = 3600.0

    async def ping(self) -> None:
        """An alias has no upstream of its own; its deployments' services are probed."""

    async def close(self) -> None:
        """Nothing to release."""
