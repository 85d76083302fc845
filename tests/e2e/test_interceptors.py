"""Inbound concerns on every RPC: request id, bearer auth, access log, metrics, inbound
rate limits, gzip."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families
from redis_server import free_port
from support import error_info, eventually, retry_delay

from generated.integration.v1 import cache_pb2, cache_pb2_grpc, pubsub_pb2, pubsub_pb2_grpc
from sidecar.config import parse_config
from sidecar.interceptors.inbound import InboundLayer
from sidecar.server import RunningServer, ServerStartError, start_server
from sidecar.testing import FakeClock, serve_for_test

pytestmark = pytest.mark.e2e


async def test_request_id_is_echoed(cache: cache_pb2_grpc.CacheServiceStub) -> None:
    call = cache.Get(cache_pb2.GetRequest(key="k"), metadata=[("x-request-id", "abc-123")])
    await call
    assert ("x-request-id", "abc-123") in tuple(await call.trailing_metadata())


async def test_a_generated_request_id_comes_back_with_errors_only(
    cache: cache_pb2_grpc.CacheServiceStub,
) -> None:
    call = cache.Get(cache_pb2.GetRequest(key="k"))
    await call
    assert [k for k, _ in await call.trailing_metadata() if k == "x-request-id"] == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cache.Get(cache_pb2.GetRequest(key=""))
    ids = [v for k, v in caught.value.trailing_metadata() if k == "x-request-id"]
    assert len(ids) == 1 and len(ids[0]) == 32


AUTH_CONFIG = """
server:
  auth:
    tokens: ["${SIDECAR_TEST_TOKEN}"]
"""


async def test_request_id_comes_back_on_errors_too(cache: cache_pb2_grpc.CacheServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cache.Get(cache_pb2.GetRequest(key=""), metadata=[("x-request-id", "bad-1")])
    assert ("x-request-id", "bad-1") in tuple(caught.value.trailing_metadata())
    assert error_info(caught.value).reason == "INVALID_REQUEST"


async def test_streams_return_the_request_id_in_trailers(
    sidecar: RunningServer, pubsub: pubsub_pb2_grpc.PubSubServiceStub
) -> None:
    call = pubsub.Subscribe(
        pubsub_pb2.SubscribeRequest(channels=["x"]), metadata=[("x-request-id", "s-1")]
    )
    assert (await call.read()).WhichOneof("event") == "started"
    for servicer in sidecar.servicers.values():
        if hasattr(servicer, "end_streams"):
            await servicer.end_streams()
    assert await call.read() is grpc.aio.EOF
    assert ("x-request-id", "s-1") in tuple(await call.trailing_metadata())


async def test_bearer_auth_rejects_missing_and_wrong_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIDECAR_TEST_TOKEN", "s3cret-token")
    async with (
        serve_for_test(AUTH_CONFIG) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", "Basic x")]):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await cache.Get(cache_pb2.GetRequest(key="k"), metadata=metadata)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert error_info(caught.value).reason == "UNAUTHENTICATED"
        ok = await cache.Get(
            cache_pb2.GetRequest(key="k"), metadata=[("authorization", "Bearer s3cret-token")]
        )
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert ok.found is False
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_access_log_has_method_status_target_and_request_id_but_no_payload(
    cache: cache_pb2_grpc.CacheServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.access")
    await cache.Set(
        cache_pb2.SetRequest(key="secret-key", value=b"PAYLOAD"), metadata=[("x-request-id", "r1")]
    )
    record = next(r for r in caplog.records if r.name == "sidecar.access")
    fields = record.__dict__
    assert (fields["method"], fields["status"], fields["target"], fields["request_id"]) == (
        "/integration.v1.CacheService/Set",
        "OK",
        "cache",
        "r1",
    )
    assert fields["duration_ms"] >= 0
    assert "PAYLOAD" not in caplog.text and "secret-key" not in caplog.text


async def test_metrics_count_requests_by_service_operation_and_status() -> None:
    reader = InMemoryMetricReader()
    port = free_port()
    config = f"integration:\n  metrics: {{prometheus_listen: '127.0.0.1:{port}'}}\n"
    async with (
        serve_for_test(config, metric_readers=[reader]) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        await cache.Get(cache_pb2.GetRequest(key="k"))
        await cache.Get(cache_pb2.GetRequest(key="k"))
        with pytest.raises(grpc.aio.AioRpcError):
            await cache.Get(cache_pb2.GetRequest(key=""))
        data = reader.get_metrics_data()
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert data is not None
    points: dict[str, list[object]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    counts = {
        (p.attributes["service"], p.attributes["operation"], p.attributes["status"]): p.value  # type: ignore[attr-defined]
        for p in points["integration_requests_total"]
    }
    assert counts[("cache", "CacheService.Get", "OK")] == 2
    assert counts[("cache", "CacheService.Get", "INVALID_ARGUMENT")] == 1
    # The duration histogram, as Prometheus scrapes it: all three calls, in cumulative buckets.
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(scraped)
        if family.name == "integration_request_duration_seconds"
        for sample in family.samples
        if sample.labels.get("operation") == "CacheService.Get"
    }
    assert samples[("integration_request_duration_seconds_count", None)] == 3
    assert samples[("integration_request_duration_seconds_bucket", "+Inf")] == 3
    assert samples[("integration_request_duration_seconds_bucket", "30.0")] == 3
    assert samples[("integration_request_duration_seconds_sum", None)] > 0
    # The SDK's metrics share the endpoint.
    assert 'integration_requests_total{operation="CacheService.Get"' in scraped


RATE_CONFIG = """
server:
  inbound_rate_limits:
    "/integration.v1.CacheService/Get": {requests_per_second: 2, burst_size: 2}
"""


async def test_inbound_rate_limit_answers_resource_exhausted_with_retry_info() -> None:
    clock = FakeClock()
    async with (
        serve_for_test(RATE_CONFIG, clock=clock) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        await cache.Get(cache_pb2.GetRequest(key="k"))
        await cache.Get(cache_pb2.GetRequest(key="k"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cache.Get(cache_pb2.GetRequest(key="k"))
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(caught.value).reason == "RATE_LIMITED"
        assert retry_delay(caught.value) == pytest.approx(0.5, abs=0.01)
        await cache.Exists(cache_pb2.ExistsRequest(key="k"))  # other methods are not limited
        await clock.advance(0.5)
        await cache.Get(cache_pb2.GetRequest(key="k"))


async def test_a_star_limit_gives_each_method_its_own_bucket_and_spares_health() -> None:
    config = 'server:\n  inbound_rate_limits:\n    "*": {requests_per_second: 1, burst_size: 1}\n'
    async with (
        serve_for_test(config, clock=FakeClock()) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        await cache.Get(cache_pb2.GetRequest(key="k"))
        await cache.Exists(cache_pb2.ExistsRequest(key="k"))  # a bucket of its own
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cache.Get(cache_pb2.GetRequest(key="k"))
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(3):
            await health.Check(health_pb2.HealthCheckRequest())


async def test_an_unknown_method_is_unimplemented(sidecar: RunningServer) -> None:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        call = channel.unary_unary("/integration.v1.CacheService/NoSuchMethod")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"")
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_gzip_compressed_requests_are_accepted(sidecar: object) -> None:
    address = sidecar.address  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(address, compression=grpc.Compression.Gzip) as channel:
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        await cache.Set(cache_pb2.SetRequest(key="z", value=b"a" * 10_000))
        got = await cache.Get(cache_pb2.GetRequest(key="z"))
    assert got.value == b"a" * 10_000


async def test_gzip_responses_when_configured() -> None:
    async with (
        serve_for_test("server: {compression: gzip}") as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        await cache.Set(cache_pb2.SetRequest(key="z", value=b"b" * 10_000))
        assert (await cache.Get(cache_pb2.GetRequest(key="z"))).value == b"b" * 10_000


async def test_a_failed_start_leaves_no_metrics_listener_behind() -> None:
    metrics_port = free_port()
    config = parse_config(
        f"integration:\n  metrics: {{prometheus_listen: '127.0.0.1:{metrics_port}'}}\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ServerStartError, match="cannot listen"):
            await start_server(config, listen=busy)
    with socket.socket() as again:  # the metrics port was given back
        again.bind(("127.0.0.1", metrics_port))


async def test_a_cancelled_stream_closes_its_generator_within_the_call() -> None:
    # grpc.aio leaves a generator handler cancelled mid-write suspended until garbage
    # collection; the layer's handler must close it itself, on the call's own task.
    closed_on: list[asyncio.Task[Any] | None] = []
    started_on: list[asyncio.Task[Any] | None] = []

    async def numbers(_request: bytes, _context: object) -> AsyncIterator[bytes]:
        started_on.append(asyncio.current_task())
        try:
            for _ in range(100):
                yield bytes(1 << 20)  # the caller reads none: flow control holds the write
        finally:
            closed_on.append(asyncio.current_task())

    handler = grpc.unary_stream_rpc_method_handler(numbers)
    server = grpc.aio.server()
    InboundLayer(None, access_log=False).registrar(server).add_registered_method_handlers(
        "test.Numbers", {"Stream": handler}
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream("/test.Numbers/Stream")(b"")
            await asyncio.wait_for(call.read(), 5)
            await asyncio.sleep(0.1)  # the server is now inside a held write
            call.cancel()
            await eventually(lambda: bool(closed_on))
    finally:
        await server.stop(None)
    assert started_on and closed_on == started_on  # closed, and on the task that ran it
