"""Feed the standard gRPC health service from backend probes.

Every `check_interval` each connection, and each backend on no connection, is pinged with a
timeout; after `consecutive_failures` failed probes it turns NOT_SERVING, and one good probe
turns it back. A service on a connection has its connection's health (one PING per
upstream, however many services share it). A service whose circuit breaker is open (its
break still running) or isolated is NOT_SERVING too, whatever its probe says: its calls are
being refused. The process ("") stays SERVING: an upstream's outage is not the pod's.

Health names: "" (the process), each gRPC service (following its default integration),
each integration by name, and each probed connection as `connection:<name>`, so a probe can
watch (`Health/Watch`) one dependency. The last check of each integration and connection
(when, how long, why it failed) is kept in `Integrations.health_checks` for AdminService.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from grpc_health.v1 import health, health_pb2

from sidecar.connections import ConnectionEntry
from sidecar.observability.logging import redact_line
from sidecar.resilience import CircuitState
from sidecar.runtime.health_check import HealthCheck
from sidecar.runtime.integrations import Integration, Integrations

__all__ = ["CONNECTION_PREFIX", "HealthMonitor"]

CONNECTION_PREFIX = "connection:"
"""Health name of a connection: `connection:<name>`."""

_log = logging.getLogger("sidecar.health")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    """Probe backends and publish their health.

    Args:
        integrations: what to probe.
        servicer: the aio health servicer to update.
        services_by_type: gRPC service name of each capability type.
        check_interval, timeout, consecutive_failures: the `integration.health_monitoring` settings.
    """

    def __init__(
        self,
        integrations: Integrations,
        servicer: health.aio.HealthServicer,
        services_by_type: Mapping[str, str],
        *,
        check_interval: float,
        timeout: float,
        consecutive_failures: int,
    ) -> None:
        self._integrations = integrations
        self._servicer = servicer
        self._services_by_type = dict(services_by_type)
        self._interval = check_interval
        self._timeout = timeout
        self._threshold = consecutive_failures
        self._failures: dict[str, int] = {}
        self._down_by_probe: dict[str, str] = {}
        """Integrations whose own probe failed `consecutive_failures` times, and why."""
        self._task: asyncio.Task[None] | None = None

    async def publish_initial(self) -> None:
        """Mark everything SERVING before the first probe (backends are built lazily)."""
        await self._servicer.set("", SERVING)
        for service in self._services_by_type.values():
            await self._servicer.set(service, SERVING)
        for item in self._integrations:
            await self._servicer.set(item.name, SERVING)
        for name, entry in self._integrations.connections:
            if entry.connection.probed:
                await self._servicer.set(CONNECTION_PREFIX + name, SERVING)

    def start(self) -> None:
        """Probe in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check_once(self) -> None:
        """Probe every connection and unconnected integration once; publish the result."""
        probed = [entry for _, entry in self._integrations.connections if entry.connection.probed]
        await asyncio.gather(*(self._probe_connection(entry) for entry in probed))
        await asyncio.gather(*(self._probe(item) for item in self._integrations))
        for type_name, service in self._services_by_type.items():
            try:
                default = self._integrations.resolve(type_name, "")
            except Exception:
                continue
            await self._servicer.set(service, SERVING if default.healthy else NOT_SERVING)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except Exception:  # a bug in one check must not end health checking for good
                _log.exception("health check failed")

    async def _probe_connection(self, entry: ConnectionEntry) -> None:
        name = entry.connection.name
        key = CONNECTION_PREFIX + name  # connection and service names may be alike
        error = await self._check(key, entry.connection.ping)
        if error is not None:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            if failures >= self._threshold and entry.healthy:
                entry.healthy = False
                _log.warning("connection unhealthy", extra={"connection": name, "error": error})
                await self._servicer.set(key, NOT_SERVING)
            return
        self._failures[key] = 0
        if not entry.healthy:
            entry.healthy = True
            _log.info("connection healthy again", extra={"connection": name})
            await self._servicer.set(key, SERVING)

    async def _check(self, key: str, ping: Callable[[], Awaitable[None]]) -> str | None:
        """Run one check, record it under `key`; its error, or None when it passed."""
        started, at = time.perf_counter(), time.time()
        error = None
        try:
            await asyncio.wait_for(ping(), self._timeout)
        except Exception as exc:
            error = repr(exc) if not isinstance(exc, TimeoutError) else "timed out"
        # AdminService shows the error: no secret may ride in it (a DSN in a driver's message).
        self._integrations.health_checks[key] = HealthCheck(
            at, time.perf_counter() - started, redact_line(error) if error else ""
        )
        return error

    async def _probe(self, item: Integration[Any]) -> None:
        entry = (
            self._integrations.connections.entry(item.connection)
            if item.connection is not None
            else None
        )
        if entry is not None and item.connection is not None and entry.connection.probed:
            self._probe_verdict(item.name, None if entry.healthy else "connection down")
            check = self._integrations.health_checks.get(CONNECTION_PREFIX + item.connection)
            if check is not None:  # the connection's check is the service's
                self._integrations.health_checks[item.name] = check
        else:
            # On no connection, or on one no health check pings (an http connection without
            # a health_path): the backend's own ping (an AI provider lists its models).
            error = await self._check(item.name, item.backend.ping)
            if error is not None:
                failures = self._failures[item.name] = self._failures.get(item.name, 0) + 1
                if failures >= self._threshold:
                    self._probe_verdict(item.name, error)
            else:
                self._failures[item.name] = 0
                self._probe_verdict(item.name, None)
        await self._publish(item)

    def _probe_verdict(self, name: str, error: str | None) -> None:
        if error is None:
            self._down_by_probe.pop(name, None)
        else:
            self._down_by_probe[name] = error

    async def _publish(self, item: Integration[Any]) -> None:
        """Publish `item`'s health: down while its probe says so, or while the breaker
        guarding its calls refuses them."""
        error = self._down_by_probe.get(item.name) or _breaker_refusing(item)
        healthy = error is None
        if healthy == item.healthy:
            return
        item.healthy = healthy
        if healthy:
            _log.info("integration healthy again", extra={"integration": item.name})
            await self._servicer.set(item.name, SERVING)
        else:
            _log.warning("integration unhealthy", extra={"integration": item.name, "error": error})
            await self._servicer.set(item.name, NOT_SERVING)


def _breaker_refusing(item: Integration[Any]) -> str | None:
    """Why `item`'s breaker refuses calls now, or None: open with its break still running,
    or isolated by hand. An open breaker whose break has run out admits the next call (a
    probe), so it no longer counts against health."""
    snapshot = item.snapshot()
    breaker = snapshot.circuit_breaker if snapshot is not None else None
    if breaker is None:
        return None
    if breaker.state is CircuitState.ISOLATED:
        return "circuit breaker isolated"
    if breaker.state is CircuitState.OPEN and (breaker.retry_after or 0.0) > 0.0:
        return "circuit breaker open"
    return None
