"""Errors that echo a caller's long input (an unknown target or name, an SQL error quoting a
value) keep their own code: the echo is cut short, so the status fits gRPC's metadata limit
and `rpc_status.from_call` reads it."""

from __future__ import annotations

import socket
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from generated.integration.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cache_pb2,
    cache_pb2_grpc,
    sql_pb2,
    sql_pb2_grpc,
)
from sidecar.interceptors.error_mapping import MAX_DETAILS_SIZE, MAX_ECHO_LENGTH
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

LONG = "a" * 10_000
PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def error_of(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def assert_bounded(error: grpc.aio.AioRpcError, code: grpc.StatusCode, reason: str) -> None:
    """The right code, a readable rich status, and nothing in it longer than the bound."""
    assert error.code() is code, (error.code(), error.details()[:200])
    status = rpc_status.from_call(error)  # raises when the message and codes disagree
    assert status is not None
    assert len(status.message) <= MAX_ECHO_LENGTH
    assert status.message.endswith("…")
    assert status.ByteSize() <= MAX_DETAILS_SIZE
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == reason
    assert all(len(value) <= MAX_ECHO_LENGTH for value in info.metadata.values())


async def test_a_long_unknown_target_is_not_found() -> None:
    async with (
        serve_for_test() as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        error = await error_of(cache.Get(cache_pb2.GetRequest(target=LONG, key="k")))
    assert_bounded(error, grpc.StatusCode.NOT_FOUND, "TARGET_NOT_FOUND")


async def test_a_long_unknown_integration_name_is_not_found() -> None:
    async with (
        serve_for_test() as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        error = await error_of(admin.GetIntegration(admin_pb2.GetIntegrationRequest(name=LONG)))
    assert_bounded(error, grpc.StatusCode.NOT_FOUND, "INTEGRATION_NOT_FOUND")


def _postgres_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _postgres_answers(), reason="no PostgreSQL on 127.0.0.1:5432")
async def test_an_sql_error_quoting_a_long_value_is_invalid_argument() -> None:
    config = f"services:\n  db:\n    type: sql\n    backend: postgres\n    dsn: {PG_DSN}\n"
    async with (
        serve_for_test(config) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        sql = sql_pb2_grpc.SqlServiceStub(channel)
        # PostgreSQL cuts identifiers to 63 characters, but quotes a bad literal whole.
        error = await error_of(sql.Query(sql_pb2.QueryRequest(sql=f"select '{LONG}'::int")))
    assert_bounded(error, grpc.StatusCode.INVALID_ARGUMENT, "SQL_ERROR")
