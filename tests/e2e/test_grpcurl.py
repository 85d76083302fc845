"""The contract as a non-Python client sees it: the real grpcurl binary, no proto files,
everything learned through server reflection."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from support import grpcurl_path

from sidecar.server import RunningServer

pytestmark = pytest.mark.e2e


async def grpcurl(*args: str, data: str | None = None) -> str:
    command = [grpcurl_path(), "-plaintext", *args]
    if data is not None:
        command[2:2] = ["-d", data]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_list_shows_services_health_and_reflection(sidecar: RunningServer) -> None:
    listed = (await grpcurl(sidecar.address, "list")).split()
    assert {
        "integration.v1.CacheService",
        "integration.v1.PubSubService",
        "integration.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    } <= set(listed)


async def test_describe_works_through_reflection(sidecar: RunningServer) -> None:
    described = await grpcurl(sidecar.address, "describe", "integration.v1.CacheService")
    assert "rpc Set ( .integration.v1.SetRequest ) returns ( .integration.v1.SetResponse )" in (
        described
    )


async def test_health_check_answers_serving(sidecar: RunningServer) -> None:
    overall = json.loads(await grpcurl(sidecar.address, "grpc.health.v1.Health/Check"))
    per_service = json.loads(
        await grpcurl(
            sidecar.address,
            "grpc.health.v1.Health/Check",
            data='{"service": "integration.v1.CacheService"}',
        )
    )
    assert overall == {"status": "SERVING"} == per_service


async def test_set_then_get_round_trip_with_json(sidecar: RunningServer) -> None:
    value = base64.b64encode(b"hello from grpcurl").decode()
    set_reply = await grpcurl(
        sidecar.address,
        "integration.v1.CacheService/Set",
        data=json.dumps({"key": "curl:1", "value": value, "ttl": "60s"}),
    )
    got = json.loads(
        await grpcurl(sidecar.address, "integration.v1.CacheService/Get", data='{"key": "curl:1"}')
    )
    assert json.loads(set_reply) == {"applied": True}
    assert got["found"] is True
    assert base64.b64decode(got["value"]) == b"hello from grpcurl"


async def test_list_integrations_shows_the_embedded_defaults(sidecar: RunningServer) -> None:
    listed = json.loads(
        await grpcurl(sidecar.address, "integration.v1.AdminService/ListIntegrations")
    )
    summary = {(i["name"], i["type"], i["backend"]) for i in listed["integrations"]}
    assert {
        ("cache", "cache", "memory"),
        ("pubsub", "pubsub", "memory"),
        ("sql", "sql", "sqlite"),
        ("echo", "ai_model", "echo"),
    } <= summary
    assert all(
        i["circuit_breaker"]["state"] == "CIRCUIT_STATE_CLOSED" for i in listed["integrations"]
    )
