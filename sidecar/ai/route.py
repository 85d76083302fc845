"""`Route`: what a request's target resolves to: deployments in order and the call policies."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sidecar.ai.budgets import AliasBudgets
from sidecar.ai.deployment import Deployment
from sidecar.ai.hedge import HedgePolicy
from sidecar.ai.response_cache import ResponseCache
from sidecar.resilience import SYSTEM_CLOCK, Clock, RetryBudget, RetryOptions

__all__ = ["PanicMode", "Route"]


@dataclass
class PanicMode:
    """When the route's calls went through open breakers (see `sidecar.ai.rounds`)."""

    since: float | None = None
    """When the current panic episode began; None outside one."""
    last: float = 0.0
    """When a call last needed an open breaker."""


@dataclass(frozen=True)
class Route:
    """A resolved target.

    Attributes:
        name: The target as the caller may name it (alias, service, or service/model).
        kind: Which of the three it is.
        deployments: Tried in this order (one for a service or deployment target).
        retry: Rounds over the deployments after all failed; None tries once.
        cache: The alias's response cache, if any.
        budget: Caps retry rounds at a fraction of recent calls.
        clock: Time for retry sleeps.
        random: Jitter source.
        panic: When the alias last tried deployments through their open breakers.
        hedge: When a slow first chunk starts the next deployment too; None never.
        limits: The alias's own and per-caller budgets; None: only the deployments'.
    """

    name: str
    kind: Literal["alias", "service", "deployment"]
    deployments: tuple[Deployment, ...]
    retry: RetryOptions | None = None
    cache: ResponseCache | None = None
    budget: RetryBudget | None = None
    clock: Clock = SYSTEM_CLOCK
    random: Callable[[], float] = field(default=_random.random)
    panic: PanicMode = field(default_factory=PanicMode, compare=False)
    hedge: HedgePolicy | None = None
    limits: AliasBudgets | None = None
