"""Recover as fast as the upstream does: probe an upstream while a breaker guarding it is open.

The regular health check runs every `check_interval` (30 s by default), far too seldom to
notice an upstream coming back. While any breaker of an integration is open, its upstream
(the connection it is on, or the backend's own ping) is probed after `fastest` seconds, the
interval doubling after each failed probe up to `slowest` (by default 0.25 s, then every
0.5 s: two PINGs a second while an upstream is down). A probe that succeeds is evidence:
every open breaker guarding that upstream half-opens (`CircuitBreaker.upstream_recovered`),
and the next real calls are its probes. With the defaults, calls succeed again well within
a second of the upstream's return (0.2-0.35 s measured), however long the outage was.

    prober = RecoveryProber(integrations, timeout=5.0)
    prober.start()
    ...
    await prober.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sidecar.backends.spec import PipelineOwner
from sidecar.resilience import CircuitBreaker, CircuitState
from sidecar.runtime.integrations import Integration, Integrations

__all__ = ["RecoveryProber"]

_log = logging.getLogger("sidecar.health")


@dataclass(slots=True)
class _Upstream:
    """One upstream with open breakers: how to ping it, and when to next."""

    ping: Callable[[], Awaitable[None]]
    breakers: list[CircuitBreaker]
    interval: float
    due: float


class RecoveryProber:
    """Probe the upstreams of open breakers and half-open the breakers when they answer.

    Args:
        integrations: the live services (their breakers and connections).
        timeout: limit on one probe.
        fastest: seconds between probes right after a breaker opened.
        slowest: the longest interval the probes back off to.
    """

    def __init__(
        self,
        integrations: Integrations,
        *,
        timeout: float,
        fastest: float = 0.25,
        slowest: float = 0.5,
    ) -> None:
        self._integrations = integrations
        self._clock = integrations.clock
        self._timeout = timeout
        self._fastest = fastest
        self._slowest = slowest
        self._upstreams: dict[str, _Upstream] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Probe in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name="recovery-prober")

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check_once(self) -> None:
        """Probe every upstream with an open breaker whose next probe is due."""
        now = self._clock.monotonic()
        found = self._open_upstreams()
        for key in list(self._upstreams):
            if key not in found:
                del self._upstreams[key]  # closed or half-open: nothing left to prove
        due: list[tuple[str, _Upstream]] = []
        for key, (ping, breakers) in found.items():
            upstream = self._upstreams.get(key)
            if upstream is None:
                upstream = self._upstreams[key] = _Upstream(ping, breakers, self._fastest, now)
            upstream.breakers = breakers
            if upstream.due <= now:
                due.append((key, upstream))
        await asyncio.gather(*(self._probe(key, upstream) for key, upstream in due))

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self._fastest)
            await self.check_once()

    async def _probe(self, key: str, upstream: _Upstream) -> None:
        try:
            await asyncio.wait_for(upstream.ping(), self._timeout)
        except Exception:
            upstream.interval = min(upstream.interval * 2, self._slowest)
            upstream.due = self._clock.monotonic() + upstream.interval
            return
        _log.info("upstream answers again: half-opening its breakers", extra={"upstream": key})
        for breaker in upstream.breakers:
            breaker.upstream_recovered()
        del self._upstreams[key]

    def _open_upstreams(
        self,
    ) -> dict[str, tuple[Callable[[], Awaitable[None]], list[CircuitBreaker]]]:
        """Each upstream guarded by an open breaker: its ping and its open breakers."""
        found: dict[str, tuple[Callable[[], Awaitable[None]], list[CircuitBreaker]]] = {}
        connections = self._integrations.connections
        for item in self._integrations:
            breakers = [b for b in _breakers(item) if b.state is CircuitState.OPEN]
            if not breakers:
                continue
            entry = connections.entry(item.connection) if item.connection is not None else None
            if entry is not None and entry.connection.probed:
                key, ping = f"connection:{item.connection}", entry.connection.ping
            else:
                key, ping = f"service:{item.name}", item.backend.ping
            known = found.get(key)
            if known is None:
                found[key] = (ping, breakers)
            else:
                known[1].extend(breakers)
        return found


def _breakers(item: Integration[Any]) -> list[CircuitBreaker]:
    """The breakers guarding `item`'s calls: its pipeline's, or its deployments'."""
    if isinstance(item.backend, PipelineOwner):
        pipelines = item.backend.pipelines()
        return [p.circuit_breaker for p in pipelines if p.circuit_breaker is not None]
    breaker = item.pipeline.circuit_breaker if item.pipeline is not None else None
    return [breaker] if breaker is not None else []
