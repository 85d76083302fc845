"""The resilience pipeline as a caller meets it through the server: rejections carry
RetryInfo, and every policy event shows in the metrics."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis_server import free_port
from support import error_info, retry_delay

from generated.integration.v1 import cache_pb2, cache_pb2_grpc
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

LIMITED = """
services:
  cache:
    type: cache
    rate_limit: {requests_per_second: 1, burst_size: 1}
"""


def points(reader: InMemoryMetricReader, name: str) -> list[object]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


async def test_outbound_limit_rejects_at_once_when_the_deadline_is_too_short() -> None:
    reader = InMemoryMetricReader()
    async with (
        serve_for_test(LIMITED, metric_readers=[reader]) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        await cache.Get(cache_pb2.GetRequest(key="k"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cache.Get(cache_pb2.GetRequest(key="k"), timeout=0.3)
        events = points(reader, "integration_resilience_events_total")
        breaker = points(reader, "integration_circuit_breaker_state")
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "RATE_LIMITED"
    assert error_info(caught.value).metadata["target"] == "cache"
    delay = retry_delay(caught.value)
    assert delay is not None and 0.5 < delay <= 1.0
    assert {
        (p.attributes["service"], p.attributes["event"]): p.value  # type: ignore[attr-defined]
        for p in events
    } == {("cache", "rate_limited"): 1}
    assert {p.attributes["service"]: p.value for p in breaker} == {"cache": 0}  # type: ignore[attr-defined]


async def test_a_non_idempotent_call_is_retried_only_with_an_idempotency_key() -> None:
    # A real refused connection (nothing listens on the port): a retryable upstream failure.
    config = f"""
services:
  counters:
    type: cache
    backend: redis
    host: 127.0.0.1
    port: {free_port()}
    retry_policy: {{max_retries: 2, base_delay: 1ms, max_delay: 2ms}}
    circuit_breaker: {{enabled: false}}
"""
    reader = InMemoryMetricReader()
    async with (
        serve_for_test(config, metric_readers=[reader]) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        request = cache_pb2.IncrementRequest(target="counters", key="n")

        def retries() -> float:
            return sum(
                p.value  # type: ignore[attr-defined]
                for p in points(reader, "integration_resilience_events_total")
                if p.attributes["event"] == "retry"  # type: ignore[attr-defined]
            )

        for metadata in ((), (("idempotency-key", "inc-1"),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await cache.Increment(request, metadata=metadata, timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            if not metadata:
                assert retries() == 0  # it may have run: never repeated without a key
        assert retries() == 2
