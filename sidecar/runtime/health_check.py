"""The record of one health check, kept per integration and per connection for AdminService."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HealthCheck"]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """When the last check ran, how long it took, and why it failed ("" when it passed)."""

    at: float
    """Seconds since the epoch (wall clock: operators read it)."""
    latency: float
    """Seconds the check took."""
    error: str = ""
