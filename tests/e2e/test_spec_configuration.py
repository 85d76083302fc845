"""The specification's configuration, verbatim (its "Integration Configuration" section),
passes `check-config` and serves: SQL on the local PostgreSQL, the cache on the local Redis,
the AI model on the local fake upstream (the one line changed: its endpoint), and the AWS
account listed by AdminService with its connection, probed on moto (reached through
`AWS_ENDPOINT_URL`, as any AWS SDK does, so the specification's text stays as it is)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from ai.fake_llm import FakeLLM
from aws_server import MotoServer, moto_server
from config.test_config_spec_example import SPEC_INTEGRATION, SPEC_SERVICES
from support import ROOT

from generated.integration.v1 import admin_pb2, admin_pb2_grpc, ai_pb2, cache_pb2, sql_pb2
from generated.integration.v1.ai_pb2_grpc import AIServiceStub
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from generated.integration.v1.sql_pb2_grpc import SqlServiceStub
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e
__all__ = ["moto_server"]

SPEC = SPEC_INTEGRATION + SPEC_SERVICES
ENVIRONMENT = {
    "OPENAI_API_KEY": "spec-key",
    "DB_USERNAME": "postgres",  # trust auth on the local server: the password is not checked
    "DB_PASSWORD": "unused",
    "REDIS_PASSWORD": "",  # the local Redis has none: empty means no AUTH
    "AWS_ACCESS_KEY_ID": "AKIASPEC",
    "AWS_SECRET_ACCESS_KEY": "spec-secret",
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    server = await FakeLLM(api_key="spec-key").start()
    yield server
    await server.close()


@pytest.fixture
async def parallel_ai_database() -> None:
    """The database the specification names, on the local PostgreSQL."""
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'parallel_ai'")
        if not exists:
            await admin.execute("CREATE DATABASE parallel_ai")
    finally:
        await admin.close()


def test_check_config_accepts_the_specification_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    run = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config", str(path)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **ENVIRONMENT},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.strip() == f"{path}: ok (4 services)"


async def test_the_specification_serves(
    fake: FakeLLM,
    parallel_ai_database: None,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    spec = SPEC.replace("https://api.openai.com/v1", f"{fake.url}/v1")
    assert spec.count("\n") == SPEC.count("\n")  # only the endpoint changed
    async with (
        serve_for_test(spec) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        sql = SqlServiceStub(channel)
        reply = await sql.Query(
            sql_pb2.QueryRequest(target="postgresql", sql="SELECT current_database()")
        )
        assert reply.rows[0].values[0].string_value == "parallel_ai"

        cache = CacheServiceStub(channel)
        key = "spec-configuration-check"
        await cache.Set(
            cache_pb2.SetRequest(target="redis", key=key, value=b"v", ttl={"seconds": 60})
        )
        assert (await cache.Get(cache_pb2.GetRequest(target="redis", key=key))).value == b"v"
        await cache.Delete(cache_pb2.DeleteRequest(target="redis", keys=[key]))

        ai = AIServiceStub(channel)
        answer = await ai.Complete(
            ai_pb2.CompleteRequest(
                target="openai",
                messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content="hi")],
            )
        )
        assert answer.content == "Hello from the fake model."

        admin = admin_pb2_grpc.AdminServiceStub(channel)
        listed = await admin.ListIntegrations(admin_pb2.ListIntegrationsRequest())
        kinds = {
            item.name: (item.type, item.backend, item.connection) for item in listed.integrations
        }
        assert kinds == {
            "aws": ("cloud", "aws", "aws"),
            "openai": ("ai_model", "openai", "openai"),
            "postgresql": ("sql", "postgres", "postgresql"),
            "redis": ("cache", "redis", "redis"),
        }
        pinged = moto_server.calls("sts:GetCallerIdentity")
        await running.monitor.check_once()  # the 30s check_interval, without the wait
        assert moto_server.calls("sts:GetCallerIdentity") == pinged + 1  # really probed
        connections = await admin.ListConnections(admin_pb2.ListConnectionsRequest())
        shown = {c.name: (c.type, c.health, list(c.users)) for c in connections.connections}
        assert shown == {
            "aws": ("aws", admin_pb2.HEALTH_STATE_SERVING, ["aws"]),
            "openai": ("http", admin_pb2.HEALTH_STATE_UNSPECIFIED, ["openai"]),  # no health_path
            "postgresql": ("postgres", admin_pb2.HEALTH_STATE_SERVING, ["postgresql"]),
            "redis": ("redis", admin_pb2.HEALTH_STATE_SERVING, ["redis"]),
        }
