"""`BackendSpec`: what one backend declares, next to its code, so the registry can build it.

A spec names the service `type` it serves and its `backend` name, the settings model of its
services, the connection type it needs (None: it talks to no shared upstream), the features
it has, and its build function. Every build function has one signature: it takes a
`BuildContext` and returns the backend.

    SPEC = BackendSpec(
        type="cache",
        backend="memory",
        settings=CacheServiceConfig,
        features=CACHE_FAMILIES,
        build=build,
    )
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sidecar.config import ServiceBase, ServicePolicies
from sidecar.connections import Connection
from sidecar.resilience import (
    CircuitState,
    Clock,
    EventListener,
    PipelineSnapshot,
    StreamingPipeline,
    StreamingSnapshot,
)

__all__ = ["BackendSpec", "BuildContext", "PipelineOwner"]

SettingsT = TypeVar("SettingsT", bound=ServiceBase)


@dataclass(frozen=True, slots=True)
class BuildContext(Generic[SettingsT]):
    """Everything a build function may use; no network I/O happens while building."""

    name: str
    """The service's name: errors report it as `target`, logs and metrics as `integration`."""
    settings: SettingsT
    policies: ServicePolicies
    """The service's resolved policies: pools and timeouts size what the backend opens."""
    connection: Connection | None
    """The connection the service names or implies, when the spec has a `connection_type`."""
    clock: Clock


@dataclass(frozen=True, slots=True)
class BackendSpec(Generic[SettingsT]):
    """One backend of one service type."""

    type: str
    backend: str
    settings: builtins.type[SettingsT]  # `type` is a field here
    build: Callable[[BuildContext[SettingsT]], object]
    connection_type: str | None = None
    features: frozenset[str] = frozenset()
    """What every instance can do (a capability's optional families, ...); an instance may
    add more of its own with a `features()` method (say, a near cache it was configured
    with)."""


class PipelineOwner(abc.ABC):
    """A backend whose calls run through pipelines of its own (an `ai_model`: a streaming
    pipeline per deployment) rather than its integration's one. The runtime reports,
    probes and listens to them through this base, without importing the backend's
    package (which a configuration without such a service never loads)."""

    @abc.abstractmethod
    def pipelines(self) -> tuple[StreamingPipeline, ...]:
        """The pipelines made so far."""

    @abc.abstractmethod
    def add_listener(self, listener: EventListener, *, lifecycle: bool = False) -> None:
        """Call `listener` for the events of every pipeline, now and later."""

    @abc.abstractmethod
    def breaker_states(self) -> list[tuple[str, CircuitState]]:
        """(pipeline name, breaker state) of every pipeline with a breaker."""

    @abc.abstractmethod
    def deployment_snapshots(self) -> list[StreamingSnapshot]:
        """Every pipeline's snapshot, sorted by name."""

    @abc.abstractmethod
    def snapshot(self) -> PipelineSnapshot | None:
        """One view for reports that show one breaker per integration."""
