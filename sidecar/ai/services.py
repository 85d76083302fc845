"""The backend objects of the two AI service types, built once per service from its config.

- `ModelService` (an `ai_model` service): the provider client plus everything the router
  needs to run a deployment on it: default model and sampling defaults, per-deployment
  limits, timeouts, breaker, bulkhead and retry settings. Every deployment (`service/model`)
  made on this service gets its own `StreamingPipeline` (breaker, buckets, cooldown) sized
  from these settings, kept here so that whoever reports on the service (AdminService, the
  breaker gauge) sees the pipelines that run: `pipelines()`, `snapshot()`,
  `breaker_states()`.
- `AliasService` (an `ai_alias` service): the ordered deployments of a model alias, its
  retry settings and its optional response cache.

Both are frozen settings with `ping()`/`close()`, so the runtime treats them like any other
backend (health monitoring, shutdown); no config or protobuf type appears here.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from sidecar.ai.budgets import AliasBudgets, AliasLimits
from sidecar.ai.hedge import HedgePolicy
from sidecar.ai.pipelines import TOKENS, DeploymentPipelines, SharedLimiters, per_minute_limits
from sidecar.backends.ai.base import ChatProvider, UpstreamTimeouts
from sidecar.backends.spec import PipelineOwner
from sidecar.resilience import (
    BulkheadOptions,
    CircuitBreakerOptions,
    CircuitState,
    Clock,
    EventListener,
    PipelineSnapshot,
    RetryOptions,
    StreamingOptions,
    StreamingPipeline,
    StreamingSnapshot,
)

if TYPE_CHECKING:
    from sidecar.ai.tokenizer import PromptCounter

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
class ModelService(PipelineOwner):
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
        bulkhead: Calls in flight (and queued) on the service, all deployments together;
            None: no bound.
        shared_limits: Makes each deployment's buckets in a store every sidecar shares
            (`store: redis`); None keeps them in this process.
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
    bulkhead: BulkheadOptions | None = None
    shared_limits: SharedLimiters | None = None
    _pipelines: DeploymentPipelines = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen settings, but the deployments' pipelines are live state made on first use.
        pipelines = DeploymentPipelines(
            self.provider.provider, self.streaming(), self.shared_limits
        )
        object.__setattr__(self, "_pipelines", pipelines)

    def prompt_counter(self, model: str) -> PromptCounter | None:
        """The exact prompt counter of `model` when its tokens are budgeted and tiktoken
        knows it (an OpenAI model); None keeps the estimate (`tokens`)."""
        if self.provider.provider != "openai" or not self.limits.tokens_per_minute:
            return None
        from sidecar.ai.tokenizer import PromptCounter, encoding_for  # imports tiktoken

        encoding = encoding_for(model)
        return PromptCounter(encoding) if encoding is not None else None

    def streaming(self) -> StreamingOptions:
        """The policies of each deployment: breaker, service bulkhead, rpm then tpm."""
        limits = self.limits
        return StreamingOptions(
            circuit_breaker=self.circuit_breaker,
            bulkhead=self.bulkhead,
            rate_limits=per_minute_limits(
                limits.requests_per_minute, limits.tokens_per_minute, limits.max_queue
            ),
        )

    def pipeline(self, deployment: str, clock: Clock) -> StreamingPipeline:
        """The pipeline of `deployment` (`service/model`), made on first use on `clock`."""
        return self._pipelines.get(deployment, clock)

    def pipelines(self) -> tuple[StreamingPipeline, ...]:
        """The pipelines of every deployment made so far."""
        return self._pipelines.all()

    def add_listener(self, listener: EventListener, *, lifecycle: bool = False) -> None:
        """Call `listener` for the events of every deployment's pipeline, now and later
        (`StreamingPipeline.add_listener`)."""
        self._pipelines.add_listener(listener, lifecycle=lifecycle)

    def breaker_states(self) -> list[tuple[str, CircuitState]]:
        """(deployment, breaker state) of every deployment with a breaker."""
        return [
            (pipeline.name, pipeline.circuit_breaker.state)
            for pipeline in self._pipelines.all()
            if pipeline.circuit_breaker is not None
        ]

    def deployment_snapshots(self) -> list[StreamingSnapshot]:
        """Every deployment made so far, sorted by name: each breaker that really runs."""
        return sorted(
            (pipeline.snapshot() for pipeline in self._pipelines.all()),
            key=lambda snapshot: snapshot.name,
        )

    def snapshot(self) -> PipelineSnapshot | None:
        """One view of the service for reports that show one breaker per integration: the
        deployment whose breaker is worst (isolated, open, half-open, then most consecutive
        failures; the first made on a tie), with its tokens-per-minute bucket (else its
        requests one) and the shared bulkhead. None before any deployment was made."""
        snapshots = [pipeline.snapshot() for pipeline in self._pipelines.all()]
        if not snapshots:
            return None
        worst = max(snapshots, key=_badness)
        return worst.as_pipeline_snapshot(TOKENS if TOKENS in worst.rate_limiters else None)

    async def ping(self) -> None:
        """Probe the upstream (health monitoring)."""
        await self.provider.ping()

    async def close(self) -> None:
        """Send the settlements still on their way to a shared budget (for a second at
        most: an unreachable store must not hold shutdown), then close the provider's
        client."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE_AT_CLOSE):
                await self._pipelines.settled()
        await self.provider.close()


_SETTLE_AT_CLOSE: Final = 1.0
"""Seconds `close` waits for settlements to reach a shared budget."""


_SEVERITY: Final = {
    CircuitState.CLOSED: 0,
    CircuitState.HALF_OPEN: 1,
    CircuitState.OPEN: 2,
    CircuitState.ISOLATED: 3,
}


def _badness(snapshot: StreamingSnapshot) -> tuple[int, int, float]:
    breaker = snapshot.circuit_breaker
    if breaker is None:
        return (0, 0, 0.0)
    return (_SEVERITY[breaker.state], breaker.consecutive_failures, breaker.failure_ratio)


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
        hedge: When a slow first chunk starts the next deployment too; None never.
        limits: Budgets of the alias as a whole and per caller; None: only the
            deployments' own.
    """

    deployments: tuple[DeploymentRef, ...]
    retry: RetryOptions | None = None
    cache_target: str | None = None
    cache_ttl: float = 3600.0
    hedge: HedgePolicy | None = None
    limits: AliasLimits | None = None
    _budgets: list[AliasBudgets] = field(
        init=False, repr=False, compare=False, default_factory=list
    )

    def budgets(self, name: str, clock: Clock) -> AliasBudgets | None:
        """The budgets of the alias `name` (made on first use, on `clock`), or None without
        `limits`."""
        if self.limits is None:
            return None
        if not self._budgets:
            self._budgets.append(AliasBudgets(name, self.limits, clock))
        return self._budgets[0]

    async def ping(self) -> None:
        """An alias has no upstream of its own; its deployments' services are probed."""

    async def close(self) -> None:
        """Send the settlements still on their way to a shared budget (for a second at
        most)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE_AT_CLOSE):
                for budgets in self._budgets:
                    await budgets.settled()
