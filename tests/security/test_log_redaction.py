"""Logs never show secrets: the configured secret values and anything that looks like a
credential are redacted from every line, at every level.

The acceptance test runs the real sidecar process at debug level with every kind of
secret-bearing setting, provokes errors on each upstream (Redis refusing the password,
PostgreSQL at a DSN nobody answers and refusing the password, an HTTP API and an AI endpoint
answering 401/404 to the Authorization header, AWS refusing the credentials), and
reads every line it wrote."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from aws_server import MotoServer
from http_server import HttpServer
from owned_postgres import OwnedPostgres
from redis_server import OwnedRedis, free_port
from sidecar_process import sidecar_process

from generated.integration.v1 import (
    ai_pb2,
    ai_pb2_grpc,
    aws_pb2,
    aws_pb2_grpc,
    cache_pb2,
    cache_pb2_grpc,
    http_pb2,
    http_pb2_grpc,
    sql_pb2,
    sql_pb2_grpc,
)
from sidecar.observability.logging import REDACTED, JsonFormatter, redact, redact_line

SECRETS = {
    "SIDECAR_TOKEN": "sidecar-inbound-token-7c1e",
    "REDIS_PASSWORD": "redis-wrong-password-55aa",
    "PG_PASSWORD": "pg-password-91f0",
    "PG_DSN_PASSWORD": "pg-dsn-password-3b7d",
    "API_TOKEN": "api-bearer-token-e4c2",
    "API_HEADER_KEY": "api-header-key-0d19",
    "AI_TOKEN": "ai-api-key-6a6f",
    "AWS_KEY": "AKIAREDACTIONTEST001",
    "AWS_SECRET": "aws-secret-access-key-2f8e",
    "AWS_SESSION": "aws-session-token-bb04",
}
INLINE_SECRET = "inline-redis-password-17d3"


@pytest.fixture
def redis_with_password() -> Iterator[int]:
    server = OwnedRedis(None, "--requirepass", "the-right-password-not-configured")
    server.start()
    try:
        yield server.port
    finally:
        server.kill()


@pytest.fixture
async def postgres_with_password() -> AsyncIterator[int]:
    """A PostgreSQL of the test's own that checks passwords (scram) on TCP; its port."""
    with OwnedPostgres() as server:
        connection = await asyncpg.connect(host=server.host, port=server.port, user="postgres")
        try:
            await connection.execute("ALTER ROLE postgres PASSWORD 'the-right-pg-password'")
            hba_file = await connection.fetchval("SHOW hba_file")
            await asyncio.to_thread(
                Path(hba_file).write_text, "host all all 127.0.0.1/32 scram-sha-256\n"
            )
            await connection.execute("SELECT pg_reload_conf()")
        finally:
            await connection.close()
        yield server.port


@pytest.fixture
def http_upstream() -> Iterator[HttpServer]:
    server = HttpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


def config(redis_port: int, postgres_port: int, http_port: int, moto_port: int) -> str:
    closed = free_port()
    return f"""
server:
  log_level: debug
  auth:
    tokens: ["${{SIDECAR_TOKEN}}"]
integration:
  health_monitoring: {{check_interval: 0.2s, timeout: 1s, consecutive_failures: 1}}
connections:
  aws:
    type: aws
    region: us-east-1
    endpoint_url: "http://127.0.0.1:{moto_port}"
    credentials:
      access_key_id: "${{AWS_KEY}}"
      secret_access_key: "${{AWS_SECRET}}"
      session_token: "${{AWS_SESSION}}"
services:
  kv: {{type: cache, backend: redis, host: 127.0.0.1, port: {redis_port},
        password: "${{REDIS_PASSWORD}}"}}
  kv2: {{type: cache, backend: redis, host: 127.0.0.1, port: {redis_port},
         password: {INLINE_SECRET}}}
  db: {{type: sql, backend: postgres,
        dsn: "postgresql://app:${{PG_DSN_PASSWORD}}@127.0.0.1:{closed}/app"}}
  db2: {{type: sql, backend: postgres, host: 127.0.0.1, port: {postgres_port},
         username: postgres, database: postgres, password: "${{PG_PASSWORD}}"}}
  rest:
    type: api
    base_url: "http://127.0.0.1:{http_port}"
    health_path: /status/401
    auth: {{type: bearer, token: "${{API_TOKEN}}"}}
    headers: {{X-Api-Key: "${{API_HEADER_KEY}}"}}
  llm:
    type: ai_model
    provider: openai
    model: gpt-4o-mini
    endpoint: "http://127.0.0.1:{http_port}/v1"
    auth: {{type: bearer, token: "${{AI_TOKEN}}"}}
  cloud: {{type: cloud, connection: aws, allow: ["sts:GetCallerIdentity"]}}
"""


async def provoke_errors(address: str) -> list[grpc.StatusCode]:
    """One failing call per upstream (and one with a wrong inbound token); their codes."""
    metadata = (("authorization", f"Bearer {SECRETS['SIDECAR_TOKEN']}"),)
    codes = []
    async with grpc.aio.insecure_channel(address) as channel:
        calls = [
            cache_pb2_grpc.CacheServiceStub(channel).Get(
                cache_pb2.GetRequest(target="kv", key="k"), metadata=metadata, timeout=10
            ),
            cache_pb2_grpc.CacheServiceStub(channel).Get(
                cache_pb2.GetRequest(target="kv", key="k"),
                metadata=(("authorization", "Bearer wrong-inbound-token"),),
            ),
            sql_pb2_grpc.SqlServiceStub(channel).Query(
                sql_pb2.QueryRequest(target="db", sql="SELECT 1"), metadata=metadata, timeout=10
            ),
            sql_pb2_grpc.SqlServiceStub(channel).Query(
                sql_pb2.QueryRequest(target="db2", sql="SELECT 1"), metadata=metadata, timeout=10
            ),
            http_pb2_grpc.HttpServiceStub(channel).Call(
                http_pb2.HttpServiceCallRequest(
                    request=http_pb2.HttpRequest(target="rest", method="GET", path="/status/401")
                ),
                metadata=metadata,
                timeout=10,
            ),
            ai_pb2_grpc.AIServiceStub(channel).Complete(
                ai_pb2.CompleteRequest(
                    target="llm",
                    messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content="hi")],
                ),
                metadata=metadata,
                timeout=10,
            ),
            aws_pb2_grpc.AwsServiceStub(channel).Call(
                aws_pb2.CallRequest(target="cloud", service="sts", operation="GetCallerIdentity"),
                metadata=metadata,
                timeout=10,
            ),
        ]
        for call in calls:
            try:
                await call
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
    return codes


@pytest.mark.e2e
async def test_a_debug_run_with_errors_on_every_upstream_logs_no_secret(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_with_password: int,
    postgres_with_password: int,
    http_upstream: HttpServer,
    moto: MotoServer,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)  # the sidecar process inherits the environment
    moto.fail_next("sts:GetCallerIdentity", status=403, code="InvalidClientTokenId", count=50)
    text = config(redis_with_password, postgres_with_password, http_upstream.port, moto.port)
    async with sidecar_process(tmp_path, text) as sidecar:
        codes = await provoke_errors(sidecar.address)
        await asyncio.sleep(1.0)  # a few health checks, each failing on its upstream
        assert await sidecar.stop() == 0
    log = sidecar.stderr_path.read_text()
    leaked = {name for name, value in SECRETS.items() if value in log}
    assert leaked == set()
    assert INLINE_SECRET not in log
    assert "wrong-inbound-token" not in log
    # The errors really happened and were written down.
    assert grpc.StatusCode.OK not in codes[:4]
    assert codes[1] is grpc.StatusCode.UNAUTHENTICATED
    entries = [json.loads(line) for line in log.splitlines()]
    unhealthy = {
        entry.get("connection") or entry.get("integration")
        for entry in entries
        if "unhealthy" in entry["msg"]
    }
    assert {"kv", "db", "db2", "rest"} <= unhealthy, unhealthy
    errors = {entry.get("connection"): entry.get("error", "") for entry in entries}
    assert "password authentication failed" in errors["db2"]
    assert "AuthenticationError" in errors["kv"]
    assert "HTTP 401" in errors["rest"]
    assert codes[-1] is grpc.StatusCode.PERMISSION_DENIED  # AWS refused the credentials
    assert any(entry.get("config_path") == "services.kv2.password" for entry in entries)


# -- the redaction itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Authorization: Bearer abc.def", f"Authorization: Bearer {REDACTED}"),
        ("{'authorization': 'Basic dXNlcjpwdw=='}", f"{{'authorization': 'Basic {REDACTED}'}}"),
        ("password=hunter22 user=app", f"password={REDACTED} user=app"),
        ('{"api_key": "k-123"}', f'{{"api_key": "{REDACTED}"}}'),
        ("X-Api-Key: k-456", f"X-Api-Key: {REDACTED}"),
        ("redis://default:pw-1@127.0.0.1:6379/0", f"redis://default:{REDACTED}@127.0.0.1:6379/0"),
        ("postgresql://app:pw%40x@db/app", f"postgresql://app:{REDACTED}@db/app"),
        ('"msg":"token=\\"t-1\\""', f'"msg":"token=\\"{REDACTED}\\""'),
        ("aws_secret_access_key = s3cr3t", f"aws_secret_access_key = {REDACTED}"),
        ('{"max_tokens":100,"prompt_tokens":12}', '{"max_tokens":100,"prompt_tokens":12}'),
        ("nothing to see here", "nothing to see here"),
    ],
)
def test_credentials_are_redacted_by_their_shape(line: str, expected: str) -> None:
    assert redact_line(line) == expected


def test_a_registered_secret_is_redacted_wherever_it_appears() -> None:
    redact(['secret-value-"quoted"\\-é'])
    record = logging.makeLogRecord(
        {
            "name": "sidecar.test",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
            "msg": "failed with %s",
            "args": ('secret-value-"quoted"\\-é',),
            "detail": 'secret-value-"quoted"\\-é',
        }
    )
    line = JsonFormatter().format(record)
    assert "secret-value" not in line
    assert json.loads(line)["detail"] == REDACTED


def test_secrets_shorter_than_four_characters_are_not_registered() -> None:
    redact(["abc"])
    assert redact_line("abc") == "abc"


def test_a_traceback_is_redacted_too() -> None:
    try:
        raise ConnectionError("cannot connect to postgresql://app:tb-secret@db:5432/app")
    except ConnectionError as error:
        record = logging.makeLogRecord(
            {"name": "sidecar.test", "msg": "boom", "exc_info": (type(error), error, None)}
        )
    stream = io.StringIO(JsonFormatter().format(record))
    assert "tb-secret" not in stream.getvalue()


async def test_a_server_redacts_its_secrets_until_it_stops_then_forgets_them() -> None:
    """Secrets are registered per server: a stopped server's do not garble later lines (of a
    process that starts servers again, as the tests do)."""
    from sidecar.config import parse_config
    from sidecar.testing import serve_for_test

    config = parse_config(
        "services:\n  cache:\n    type: cache\n    backend: redis\n    port: 1\n"
        "    password: ${CACHE_PASSWORD}\n",
        environ={"CACHE_PASSWORD": "owned-by-one-server"},
    )
    async with serve_for_test(config):
        assert redact_line("x owned-by-one-server y") == f"x {REDACTED} y"
    assert redact_line("x owned-by-one-server y") == "x owned-by-one-server y"
