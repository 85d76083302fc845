"""`type: cloud` services and `aws` connections in a running sidecar: AdminService lists
them with the health their STS ping really found (they are probed now)."""

from __future__ import annotations

import grpc
import pytest
from aws_server import FAKE_KEY, FAKE_SECRET, MotoServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis_server import free_port

from generated.integration.v1 import admin_pb2, admin_pb2_grpc
from sidecar.testing import serve_for_test


async def test_admin_lists_aws_connections_with_their_probed_health(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_TEST_AWS_KEY", FAKE_KEY)
    monkeypatch.setenv("SIDECAR_TEST_AWS_SECRET", FAKE_SECRET)
    credentials = (
        "credentials: {access_key_id: '${SIDECAR_TEST_AWS_KEY}', "
        "secret_access_key: '${SIDECAR_TEST_AWS_SECRET}'}"
    )
    refused = f"http://127.0.0.1:{free_port()}"
    config = f"""
integration:
  health_monitoring: {{check_interval: 1h, consecutive_failures: 1}}
connections:
  account:
    {{type: aws, region: us-east-1, endpoint_url: {moto_server.url}, {credentials}}}
  gone:
    {{type: aws, region: us-east-1, endpoint_url: {refused}, {credentials},
     timeouts: {{connect: 0.5s, read: 0.5s}}}}
services:
  aws: {{type: cloud, connection: account}}
  archive: {{type: cloud, connection: account}}
  inline:
    {{type: cloud, region: eu-west-1, endpoint_url: {moto_server.url}, {credentials}}}
  broken: {{type: cloud, connection: gone}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        before = moto_server.calls("sts:GetCallerIdentity")
        await running.monitor.check_once()
        # One ping per connection, however many services share it.
        assert moto_server.calls("sts:GetCallerIdentity") - before == 2

        admin = admin_pb2_grpc.AdminServiceStub(channel)
        listed = await admin.ListConnections(admin_pb2.ListConnectionsRequest())
        shown = {c.name: (c.type, c.health, list(c.users), c.implicit) for c in listed.connections}
        assert shown == {
            "account": ("aws", admin_pb2.HEALTH_STATE_SERVING, ["archive", "aws"], False),
            "gone": ("aws", admin_pb2.HEALTH_STATE_NOT_SERVING, ["broken"], False),
            "inline": ("aws", admin_pb2.HEALTH_STATE_SERVING, ["inline"], True),
        }
        health = health_pb2_grpc.HealthStub(channel)
        statuses = {
            name: (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
            for name in ("aws", "broken")
        }
        assert statuses == {
            "aws": health_pb2.HealthCheckResponse.SERVING,
            "broken": health_pb2.HealthCheckResponse.NOT_SERVING,
        }
