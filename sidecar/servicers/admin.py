"""AdminService: what is configured and the live state of each integration's policies.

An `ai_model` service has no pipeline of its own: each of its deployments runs through its
own streaming pipeline. Its `deployments` list every one of them; its top-level policies are
those of the deployment whose breaker is worst (with that deployment's token bucket and the
service's shared bulkhead), for views that show one breaker per service. An `ai_alias` has
no policies of its own to describe (its deployments' services do)."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from generated.integration.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from sidecar.errors import NotFound
from sidecar.resilience import CircuitBreakerSnapshot, CircuitState, RateLimiterSnapshot
from sidecar.runtime import Integration, Integrations
from sidecar.runtime.health import CONNECTION_PREFIX
from sidecar.runtime.health_check import HealthCheck
from sidecar.servicers._common import Context, invalid

__all__ = ["AdminServicer"]

_DEFAULT_PAGE = 100
_MAX_PAGE = 1000
_STATES = {
    CircuitState.CLOSED: admin_pb2.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: admin_pb2.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: admin_pb2.CIRCUIT_STATE_HALF_OPEN,
    CircuitState.ISOLATED: admin_pb2.CIRCUIT_STATE_ISOLATED,
}


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Describe the configured integrations."""

    def __init__(self, integrations: Integrations) -> None:
        self._integrations = integrations

    async def ListIntegrations(
        self, request: admin_pb2.ListIntegrationsRequest, context: Context
    ) -> admin_pb2.ListIntegrationsResponse:
        size = _page_size(request.page)
        # The page token is the last name of the previous page: names are unique and sorted.
        after = request.page.page_token
        items = [item for item in self._integrations if item.name > after]
        page, rest = items[:size], items[size:]
        return admin_pb2.ListIntegrationsResponse(
            integrations=[
                describe(item, self._integrations.health_checks.get(item.name)) for item in page
            ],
            page=common_pb2.PageResponse(next_page_token=page[-1].name if rest else ""),
        )

    async def ListConnections(
        self, request: admin_pb2.ListConnectionsRequest, context: Context
    ) -> admin_pb2.ListConnectionsResponse:
        size = _page_size(request.page)
        after = request.page.page_token
        items = [(name, entry) for name, entry in self._integrations.connections if name > after]
        page, rest = items[:size], items[size:]
        return admin_pb2.ListConnectionsResponse(
            connections=[
                admin_pb2.Connection(
                    name=name,
                    type=entry.connection.type,
                    health=_health(entry.healthy)
                    if entry.connection.probed
                    else admin_pb2.HEALTH_STATE_UNSPECIFIED,
                    users=sorted(entry.users),
                    implicit=entry.implicit,
                    last_check=_last_check(
                        self._integrations.health_checks.get(CONNECTION_PREFIX + name)
                    ),
                )
                for name, entry in page
            ],
            page=common_pb2.PageResponse(next_page_token=page[-1][0] if rest else ""),
        )

    async def GetIntegration(
        self, request: admin_pb2.GetIntegrationRequest, context: Context
    ) -> admin_pb2.GetIntegrationResponse:
        if not request.name:
            raise invalid("name", "must not be empty")
        item = self._integrations.get(request.name)
        if item is None:
            raise NotFound(
                f"no integration named {request.name!r}",
                reason="INTEGRATION_NOT_FOUND",
                metadata={"name": request.name},
            )
        return admin_pb2.GetIntegrationResponse(
            integration=describe(item, self._integrations.health_checks.get(item.name))
        )


def _page_size(page: common_pb2.PageRequest) -> int:
    if page.page_size < 0:
        raise invalid("page.page_size", "must not be negative")
    return min(page.page_size or _DEFAULT_PAGE, _MAX_PAGE)


def _health(healthy: bool) -> admin_pb2.HealthState.ValueType:
    return admin_pb2.HEALTH_STATE_SERVING if healthy else admin_pb2.HEALTH_STATE_NOT_SERVING


def _last_check(check: HealthCheck | None) -> admin_pb2.HealthCheckResult | None:
    if check is None:
        return None
    at = timestamp_pb2.Timestamp()
    at.FromNanoseconds(int(check.at * 1e9))
    return admin_pb2.HealthCheckResult(time=at, latency_seconds=check.latency, error=check.error)


def describe(item: Integration[Any], check: HealthCheck | None = None) -> admin_pb2.Integration:
    """The admin view of one integration, with its last health check if there was one."""
    result = admin_pb2.Integration(
        last_check=_last_check(check),
        name=item.name,
        type=item.type,
        backend=item.backend_name,
        default=item.is_default,
        health=_health(item.healthy),
        connection=item.connection or "",
        features=sorted(item.features),
    )
    result.deployments.extend(
        admin_pb2.Deployment(
            name=deployment.name,
            circuit_breaker=_breaker(deployment.circuit_breaker),
            rate_limiters={
                name: _limiter(limiter) for name, limiter in deployment.rate_limiters.items()
            },
            cooldown_seconds=deployment.cooldown or 0.0,
        )
        for deployment in item.deployment_snapshots()
    )
    snapshot = item.snapshot()
    if snapshot is None:
        return result
    if snapshot.circuit_breaker is not None:
        result.circuit_breaker.CopyFrom(_breaker(snapshot.circuit_breaker))
    if snapshot.rate_limiter is not None:
        result.rate_limiter.CopyFrom(_limiter(snapshot.rate_limiter))
    bulkhead = snapshot.bulkhead
    if bulkhead is not None:
        result.bulkhead.CopyFrom(
            admin_pb2.BulkheadStatus(
                enabled=True,
                in_flight=bulkhead.in_flight,
                queued=bulkhead.queued,
                max_concurrent_calls=bulkhead.max_concurrent_calls,
            )
        )
    return result


def _breaker(breaker: CircuitBreakerSnapshot | None) -> admin_pb2.CircuitBreakerStatus:
    if breaker is None:
        return admin_pb2.CircuitBreakerStatus()
    return admin_pb2.CircuitBreakerStatus(
        state=_STATES[breaker.state],
        consecutive_failures=breaker.consecutive_failures,
        failure_ratio=breaker.failure_ratio,
        calls_in_window=breaker.total_in_window,
        retry_after_seconds=breaker.retry_after or 0.0,
    )


def _limiter(limiter: RateLimiterSnapshot) -> admin_pb2.RateLimiterStatus:
    return admin_pb2.RateLimiterStatus(
        enabled=True,
        available_tokens=limiter.available,
        capacity=limiter.capacity,
        tokens_per_second=limiter.rate,
        queued=limiter.queued,
    )
