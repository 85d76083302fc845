"""Budgets of an alias as a whole and per caller, checked before its deployments' own.

A deployment's budget (`pipelines`) protects one API key; an alias's `rate_limit` caps what
the alias spends on all its deployments together, and `per_caller` what each caller spends
(one budget per distinct value of a request metadata key, such as `x-tenant-id`). A chat
call takes 1 request and its reservation (prompt plus `max_tokens`, counted as the alias's
first deployment counts it) from the alias's buckets and its caller's before any deployment
is tried; it waits in line if its deadline allows, else RESOURCE_EXHAUSTED (`RATE_LIMITED`
with a RetryInfo, naming the alias and the caller). When the call ends, the reservation is
settled with what its attempts cost, all of them together (`AliasCharge.spend`, called by
each `Admission` as it settles). Embeddings, images and transcriptions take the same share
(`AliasBudgets.charged`, as chat does), weighed as their first deployment weighs them.

Each budget is a `StreamingPipeline` with only its rate limits (no breaker, no bulkhead),
so admission, waiting and reconciliation are the deployments' own, and with `store: redis`
its buckets live on Redis, shared by every sidecar, at

    <key_prefix>sidecar:ratelimit:ai:<alias>:requests|tokens
    <key_prefix>sidecar:ratelimit:ai:<alias>:caller:<value>:requests|tokens

A caller's value goes into a key, so it is bounded and checked (`CALLER_VALUE`: no spaces,
no glob characters); calls without the metadata key share the budget of the empty value.
This sidecar keeps the budgets of at most `max_callers` callers, forgetting the least
recently seen beyond that (a local budget then starts afresh; a Redis one stays on Redis).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from sidecar.ai.pipelines import TOKENS, SharedLimiters, per_minute_limits
from sidecar.errors import InvalidArgument, ResourceExhausted, SidecarError
from sidecar.observability.call_context import current_call
from sidecar.resilience import (
    Clock,
    Deadline,
    ExecutionRejected,
    OverCapacityError,
    StreamingOptions,
    StreamingPipeline,
    StreamLease,
    StreamOutcome,
)

__all__ = ["CALLER_VALUE", "AliasBudgets", "AliasCharge", "AliasLimits", "CallerLimits"]

CALLER_VALUE: Final = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")
"""What a caller's metadata value may be: it becomes part of a Redis key."""


@dataclass(frozen=True, slots=True)
class CallerLimits:
    """Per-caller budgets: the metadata key naming the caller, the limits of each."""

    metadata_key: str = "x-tenant-id"
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_callers: int = 10_000


@dataclass(frozen=True)
class AliasLimits:
    """An alias's `rate_limit`: its own budgets, per-caller ones, where they live.

    Attributes:
        requests_per_minute: Requests the alias starts per minute; None: no limit.
        tokens_per_minute: Tokens the alias spends per minute; None: no limit.
        max_queue: Calls that may wait for each bucket.
        per_caller: Budgets of each caller; None: none.
        shared: Makes the buckets in a store every sidecar shares; None: in this process.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_queue: int = 1000
    per_caller: CallerLimits | None = None
    shared: SharedLimiters | None = None


def _options(requests: float | None, tokens: float | None, max_queue: int) -> StreamingOptions:
    return StreamingOptions(rate_limits=per_minute_limits(requests, tokens, max_queue))


class AliasCharge:
    """What one call took from its alias's budgets, settled once when the call ends with
    what its attempts cost (`spend`)."""

    __slots__ = ("_leases", "spent")

    def __init__(self, leases: Sequence[StreamLease]) -> None:
        self._leases = tuple(leases)
        self.spent = 0
        """Tokens the call's attempts cost so far."""

    def spend(self, tokens: float) -> None:
        """An attempt of the call was settled at `tokens`."""
        self.spent += int(tokens)

    def settle(self) -> None:
        """Charge what the call's attempts cost instead of the reservation (once)."""
        for lease in self._leases:
            if not lease.settled:
                lease.settle(StreamOutcome.IGNORED, actual_weight=self.spent)


class AliasBudgets:
    """The budgets of one alias, and of each of its callers (made on first use).

    Args:
        alias: The alias's name (in errors and keys).
        limits: Its `rate_limit`.
        clock: Time for the buckets.
    """

    def __init__(self, alias: str, limits: AliasLimits, clock: Clock) -> None:
        self._alias = alias
        self._limits = limits
        self._clock = clock
        self._own = self._pipeline(
            alias, _options(limits.requests_per_minute, limits.tokens_per_minute, limits.max_queue)
        )
        caller = limits.per_caller
        self._caller_options = (
            _options(caller.requests_per_minute, caller.tokens_per_minute, limits.max_queue)
            if caller is not None
            else None
        )
        self._callers: collections.OrderedDict[str, StreamingPipeline] = collections.OrderedDict()

    @property
    def metadata_key(self) -> str | None:
        """The metadata key naming callers, or None without per-caller budgets."""
        caller = self._limits.per_caller
        return caller.metadata_key if caller is not None else None

    async def settled(self) -> None:
        """Wait for the settlements still on their way to a shared store (at shutdown)."""
        pipelines = (self._own, *self._callers.values())
        waits = [
            settled()
            for pipeline in pipelines
            for limiter in pipeline.rate_limiters.values()
            if (settled := getattr(limiter, "settled", None)) is not None
        ]
        await asyncio.gather(*waits)

    def tokens_available(self) -> float | None:
        """Tokens the alias's own budget holds now (as last seen, on Redis), or None
        without a tokens-per-minute budget."""
        snapshot = self._own.snapshot().rate_limiters.get(TOKENS)
        return snapshot.available if snapshot is not None else None

    def caller_of(self, metadata: Sequence[tuple[str, str | bytes]]) -> str:
        """The caller a call's metadata names ("" when it names none, or without per-caller
        budgets).

        Raises:
            InvalidArgument: The value is not a valid caller (`CALLER_VALUE`).
        """
        key = self.metadata_key
        if key is None:
            return ""
        value = next((v for k, v in metadata if k == key), "")
        if value == "":
            return ""
        if not isinstance(value, str) or CALLER_VALUE.fullmatch(value) is None:
            raise InvalidArgument(
                f"metadata {key}: at most 128 letters, digits and . _ : @ + = / -",
                reason="INVALID_REQUEST",
                metadata={"field": str(key)},
            )
        return value

    async def admit(self, weight: int, caller: str, deadline: Deadline | None) -> AliasCharge:
        """Take 1 request and `weight` tokens from the alias's budgets and `caller`'s.

        Raises:
            ResourceExhausted: A budget cannot admit the call before `deadline` (nothing is
                kept).
        """
        leases = [await self._own.admit(weight=weight, deadline=deadline)]
        if self._caller_options is not None:
            try:
                leases.append(await self._caller(caller).admit(weight=weight, deadline=deadline))
            except BaseException:
                leases[0].settle(StreamOutcome.IGNORED, actual_weight=0)
                raise
        return AliasCharge(leases)

    @contextlib.asynccontextmanager
    async def charged(self, weight: int, deadline: Deadline | None) -> AsyncIterator[AliasCharge]:
        """The share of the running call (its caller named by the RPC's metadata), taken
        with `admit` and settled with what its attempts spent when the block ends, however
        it ends.

        Raises:
            InvalidArgument: The metadata names no valid caller.
            ResourceExhausted: As `admit`.
        """
        info = current_call()
        caller = self.caller_of(info.metadata if info is not None else ())
        charge = await self.admit(weight, caller, deadline)
        try:
            yield charge
        finally:
            charge.settle()

    def _caller(self, caller: str) -> StreamingPipeline:
        pipeline = self._callers.get(caller)
        if pipeline is not None:
            self._callers.move_to_end(caller)
            return pipeline
        assert self._caller_options is not None and self._limits.per_caller is not None
        pipeline = self._pipeline(f"{self._alias}:caller:{caller}", self._caller_options, caller)
        self._callers[caller] = pipeline
        if len(self._callers) > self._limits.per_caller.max_callers:
            self._callers.popitem(last=False)
        return pipeline

    def _pipeline(
        self, scope: str, options: StreamingOptions, caller: str | None = None
    ) -> StreamingPipeline:
        shared = self._limits.shared
        limiters = None
        if shared is not None:
            limiters = {
                limit.name: shared(scope, limit, self._clock) for limit in options.rate_limits
            }
        return StreamingPipeline(
            scope,
            options,
            clock=self._clock,
            rate_limiters=limiters,
            rejection_error=self._refusal(caller),
        )

    def _refusal(self, caller: str | None) -> _Refusal:
        metadata = {"alias": self._alias}
        whose = f"alias {self._alias}"
        if caller is not None:
            metadata["caller"] = caller
            whose = f"caller {caller!r} of alias {self._alias}"
        return _Refusal(whose, metadata)


class _Refusal:
    """Turns a budget's rejection into RESOURCE_EXHAUSTED naming the alias (and caller)."""

    __slots__ = ("_metadata", "_whose")

    def __init__(self, whose: str, metadata: dict[str, str]) -> None:
        self._whose = whose
        self._metadata = metadata

    def __call__(self, exc: ExecutionRejected) -> SidecarError:
        if isinstance(exc, OverCapacityError):
            reason = "TOKEN_LIMIT_EXCEEDED"
            what = f"cannot take a request estimated at {exc.weight:g} tokens per minute"
        else:
            reason, what = "RATE_LIMITED", "is over its rate limit"
        return ResourceExhausted(
            f"{self._whose} {what}",
            reason=reason,
            metadata=dict(self._metadata),
            retry_after=exc.retry_after,
        )
