"""A deployment (one model on one `ai_model` service) and the admission of one attempt.

Each deployment runs its attempts through its `StreamingPipeline` (see `pipelines`): cooldown,
breaker, the service's bulkhead, then the requests-per-minute and tokens-per-minute buckets,
so an open breaker spends no token. A refusal is a `sidecar.errors` type naming the
deployment (UPSTREAM_RATE_LIMITED while cooling down, TOKEN_LIMIT_EXCEEDED, CIRCUIT_OPEN,
BULKHEAD_FULL, RATE_LIMITED).

`wait=False` refuses at once when a limiter or the bulkhead would make the call wait (an
alias then tries its next deployment); `wait=True` queues within the deadline.

An `Admission` is the pipeline's lease seen by the AI: `first_chunk()` commits the attempt
(no fallback or retry afterwards), and `succeeded()` or `failed()` settles it once, deciding
how the breaker counts it: upstream trouble is a failure, an upstream 429 cools the
deployment down and counts as nothing, and so do the caller's own errors and cancellations.
Either charges the attempt's usage instead of its reservation, however the attempt ended
(the upstream's figure, else a count of what it streamed: `tokens.StreamTally`).
The "settled" event carries a `GenAIAttempt`, from which the GenAI metrics are recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import TracebackType
from typing import Any, Final

from sidecar.ai.budgets import AliasCharge
from sidecar.ai.hedge import FirstChunkTimes
from sidecar.ai.pipelines import REQUESTS, TOKENS
from sidecar.ai.services import ModelService
from sidecar.ai.tokens import reservation
from sidecar.backends.ai.base import ChatRequest, Usage
from sidecar.errors import SidecarError
from sidecar.observability.genai_metrics import GenAIAttempt
from sidecar.resilience import (
    Bulkhead,
    CircuitBreaker,
    Clock,
    Deadline,
    EventListener,
    RateLimiter,
    StreamLease,
    StreamOutcome,
)

__all__ = ["Admission", "Deployment"]

DEFAULT_COOLDOWN: Final = 1.0
"""Seconds a deployment rests after a 429 that names no Retry-After."""


class Deployment:
    """One model on one service.

    Args:
        service_name: The `ai_model` service.
        model: The upstream model.
        service: The service's settings and provider; it keeps the deployment's pipeline.
        clock: Time for the pipeline (breaker, buckets, cooldown), if it is made here.
    """

    def __init__(self, service_name: str, model: str, service: ModelService, clock: Clock) -> None:
        self.name = f"{service_name}/{model}"
        self.service_name = service_name
        self.model = model
        self.service = service
        self.provider = service.provider
        self.provider_name = service.provider.provider
        self.pipeline = service.pipeline(self.name, clock)
        self.first_chunks = FirstChunkTimes()
        """Recent times to first chunk, for hedging at a percentile of them."""
        self.prompts = service.prompt_counter(model)
        """Counts prompts exactly for the token budget (OpenAI models); None estimates."""
        if self.prompts is not None:
            self.prompts.warm()  # loaded in a thread by the first call, not on it

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The deployment's circuit breaker, or None when breakers are off."""
        return self.pipeline.circuit_breaker

    @property
    def requests(self) -> RateLimiter | None:
        """The requests-per-minute bucket, or None without that limit."""
        return self.pipeline.rate_limiters.get(REQUESTS)

    @property
    def tokens(self) -> RateLimiter | None:
        """The tokens-per-minute bucket, or None without that limit."""
        return self.pipeline.rate_limiters.get(TOKENS)

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The service's bulkhead (shared by its deployments), or None."""
        return self.pipeline.bulkhead

    def add_listener(self, listener: EventListener) -> None:
        """Call `listener` for every event of this deployment's pipeline, the lifecycle of
        each attempt included."""
        self.pipeline.add_listener(listener, lifecycle=True)

    def prepare(self, request: ChatRequest) -> ChatRequest:
        """The request with this service's defaults filled in where it set nothing."""
        defaults = self.service.defaults
        changes: dict[str, Any] = {}
        if request.temperature is None and defaults.temperature is not None:
            changes["temperature"] = defaults.temperature
        if request.top_p is None and defaults.top_p is not None:
            changes["top_p"] = defaults.top_p
        if request.max_tokens is None and defaults.max_tokens is not None:
            changes["max_tokens"] = defaults.max_tokens
        return dataclasses.replace(request, **changes) if changes else request

    async def reservation(self, request: ChatRequest) -> int:
        """What a chat attempt reserves from this deployment's token budget: its prompt,
        counted with the model's tokenizer where there is one, plus `max_tokens`."""
        if self.prompts is None:
            return reservation(request)
        return reservation(request, await self.prompts.count(request))

    def cool_down(self, seconds: float | None) -> None:
        """Send no calls here for `seconds` (an upstream 429's Retry-After)."""
        self.pipeline.cool_down(seconds if seconds is not None else DEFAULT_COOLDOWN)

    async def admit(
        self,
        weight: int,
        deadline: Deadline | None,
        *,
        wait: bool,
        operation: str = "chat",
        panic: bool = False,
        charge: AliasCharge | None = None,
    ) -> Admission:
        """Reserve what one attempt needs: a breaker permit, a bulkhead slot, 1 request and
        `weight` tokens; in `panic` mode an open breaker lets the attempt through. What the
        attempt costs is also spent from `charge` (its alias's budgets) when it settles.

        Raises:
            SidecarError: The deployment refuses the attempt (see the module docstring).
        """
        lease = await self.pipeline.admit(
            weight=weight,
            deadline=deadline,
            wait=wait,
            detail=GenAIAttempt(operation),
            panic=panic,
        )
        return Admission(self, lease, operation, charge)


class Admission:
    """One admitted attempt on a deployment.

    `first_chunk()` marks that output reached the caller (`committed`). Exactly one of
    `succeeded` or `failed` settles the attempt; later calls change nothing. `release()`
    (or leaving a `with` block) settles an attempt nothing settled as ignored, giving its
    bulkhead slot back.
    """

    __slots__ = ("_charge", "_deployment", "_lease", "_operation")

    def __init__(
        self,
        deployment: Deployment,
        lease: StreamLease,
        operation: str,
        charge: AliasCharge | None = None,
    ) -> None:
        self._deployment = deployment
        self._lease = lease
        self._operation = operation
        self._charge = charge

    @property
    def committed(self) -> bool:
        """Output reached the caller: the attempt must not be retried or moved elsewhere."""
        return self._lease.committed

    @property
    def settled(self) -> bool:
        """Whether the attempt has been settled."""
        return self._lease.settled

    @property
    def through_open_breaker(self) -> bool:
        """Admitted in panic mode, through the deployment's open breaker."""
        return self._lease.bypassed_breaker

    def first_chunk(self) -> None:
        """Output is about to reach the caller: from now on nothing is retried."""
        self._lease.first_chunk()

    def succeeded(self, usage: Usage | None, response_model: str = "") -> None:
        """The upstream answered completely: charge the real usage instead of the
        reservation (refunding the difference)."""
        if self._lease.settled:
            return
        self._settle(
            StreamOutcome.SUCCESS,
            usage,
            GenAIAttempt(self._operation, "OK", _recorded(usage), response_model),
        )

    def failed(self, error: BaseException, usage: Usage | None = None) -> None:
        """The attempt ended with `error`: upstream trouble counts against the breaker, a
        429 cools the deployment down, anything else (the caller's own mistake, a
        cancellation, the caller's deadline) says nothing about the upstream.

        `usage` (what the attempt cost, as far as it got) is charged instead of the
        reservation and recorded; None keeps the reservation.
        """
        if self._lease.settled:
            return
        outcome = StreamOutcome.IGNORED
        if isinstance(error, SidecarError):
            label = error.reason
            if error.reason == "UPSTREAM_RATE_LIMITED":
                self._deployment.cool_down(error.retry_after)
            elif error.transient:
                outcome = StreamOutcome.FAILURE
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            label = "CANCELLED"
        else:
            label = "INTERNAL"
        self._settle(outcome, usage, GenAIAttempt(self._operation, label, _recorded(usage)))

    def release(self, usage: Usage | None = None, outcome: str = "CANCELLED") -> None:
        """Settle the attempt as ignored if nothing settled it (frees its bulkhead slot),
        charging `usage` as `failed` does; `outcome` labels it in the metrics (CANCELLED,
        or HEDGE_LOST for the slower of a hedged pair)."""
        if not self._lease.settled:
            self._settle(
                StreamOutcome.IGNORED,
                usage,
                GenAIAttempt(self._operation, outcome, _recorded(usage)),
            )

    def _settle(self, outcome: StreamOutcome, usage: Usage | None, detail: GenAIAttempt) -> None:
        """Settle the lease with `usage` (None keeps the reservation), and spend the same
        from the alias's budgets."""
        actual = usage.total_tokens if usage is not None else None
        self._lease.settle(outcome, actual_weight=actual, detail=detail)
        if self._charge is not None:
            self._charge.spend(actual if actual is not None else self._lease.weight)

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _recorded(usage: Usage | None) -> Usage | None:
    """The usage the GenAI metrics record: none for an attempt that cost nothing (refused
    or unreachable), whose zeros would only skew the token histograms."""
    return usage if usage is not None and usage.total_tokens else None
