"""The row, setup and fixture types of the reliable-topic conformance suite
(`tests/conformance/reliable`), importable by its tests and by its conftest."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.backends.pubsub import PubSubBackend, ReliablePubSub
from sidecar.config import PubSubServiceConfig
from sidecar.connections import Connection

__all__ = ["MAX_DELIVERIES", "VISIBILITY_TIMEOUT", "Reliable", "Row", "Setup"]

VISIBILITY_TIMEOUT = 0.5
"""Seconds before an unacknowledged message is delivered again (short: tests wait it out)."""
MAX_DELIVERIES = 3


@dataclass
class Setup:
    """How one row reaches its server; see the module docstring."""

    connect: Callable[[dict[str, Any]], tuple[PubSubServiceConfig, Connection]]
    cleanup: Callable[[list[PubSubBackend]], Awaitable[None]]
    """Given the backends built (closed already): delete their names, close connections."""


@dataclass(frozen=True)
class Row:
    """One reliable-topic backend set up one way."""

    id: str
    backend: str
    setup: str
    lacks: frozenset[str] = field(default_factory=frozenset)


_groups = itertools.count()


@dataclass
class Reliable:
    """The backend under test and what the suite needs around it."""

    backend: ReliablePubSub
    plain: PubSubBackend
    row: Row
    make: Callable[..., Awaitable[ReliablePubSub]]

    def group(self) -> str:
        """A group name no other test uses."""
        return f"g{next(_groups)}"
