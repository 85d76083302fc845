"""`metrics.otlp`: every metric is pushed to an OTLP receiver each `export_interval`,
`rpc.server.duration` (OpenTelemetry's RPC metric) among them; `export_interval` means
something only then."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from observability.otlp_receiver import OtlpReceiver

from generated.integration.v1 import cache_pb2, cache_pb2_grpc
from sidecar.config import ConfigError, parse_config
from sidecar.testing import serve_for_test


async def test_metrics_are_pushed_every_export_interval() -> None:
    async with OtlpReceiver() as receiver:
        config = f"""
server: {{access_log: false}}
integration:
  metrics:
    export_interval: 100ms
    otlp: {{endpoint: "{receiver.endpoint}"}}
"""
        async with (
            serve_for_test(config) as running,
            grpc.aio.insecure_channel(running.address) as channel,
        ):
            await cache_pb2_grpc.CacheServiceStub(channel).Get(cache_pb2.GetRequest(key="k"))
            wanted = {
                "rpc.server.duration",
                "integration_requests_total",
                "integration_error_rate",
                "integration_connection_status",
            }
            deadline = time.monotonic() + 5
            while not wanted <= receiver.metric_names:  # pushed, nobody asked
                assert time.monotonic() < deadline, receiver.metric_names
                await asyncio.sleep(0.05)


def test_export_interval_is_accepted_only_with_a_receiver_to_push_to() -> None:
    with pytest.raises(ConfigError, match="export_interval is not the sidecar's to set"):
        parse_config("integration:\n  metrics: {export_interval: 5s}\n", environ={})
    config = parse_config(
        "integration:\n  metrics:\n    export_interval: 5s\n"
        "    otlp: {endpoint: 'http://collector:4318', protocol: http/protobuf}\n",
        environ={},
    )
    assert config.integration.metrics.export_interval == 5.0


def test_an_otlp_endpoint_must_be_an_http_url() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("integration:\n  tracing: {otlp: {endpoint: 'collector:4317'}}\n", environ={})
    ((path, message),) = caught.value.problems
    assert path == "integration.tracing.otlp.endpoint"
    assert "http:// or https:// URL" in message
