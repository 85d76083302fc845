"""SIGTERM on a sidecar process with 50 unary calls and 10 Subscribe streams in flight: the
unary calls complete, a call made after the signal gets UNAVAILABLE with `SHUTTING_DOWN`,
every stream ends cleanly (status OK), and the process exits 0 within its grace period."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from fault_load import FIGURES
from sidecar_process import sidecar_process
from support import error_info

from generated.integration.v1 import pubsub_pb2, pubsub_pb2_grpc, sql_pb2, sql_pb2_grpc

pytestmark = pytest.mark.e2e

PG_DSN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
GRACE = 5.0
UNARY, STREAMS = 50, 10


async def test_sigterm_finishes_50_calls_ends_10_streams_and_exits_zero(tmp_path: Path) -> None:
    config = f"""
server: {{access_log: false, shutdown_grace: {GRACE:g}s}}
services:
  events: {{type: pubsub}}
  db:
    type: sql
    backend: postgres
    dsn: "{PG_DSN}"
    connection_pool: {{min_connections: 1, max_connections: {UNARY}}}
    bulkhead: {{max_concurrent_calls: {UNARY}}}
"""
    async with (
        sidecar_process(tmp_path, config) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        sql = sql_pb2_grpc.SqlServiceStub(channel)
        pubsub = pubsub_pb2_grpc.PubSubServiceStub(channel)
        streams = [
            pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=[f"s{i}"]))
            for i in range(STREAMS)
        ]
        for stream in streams:
            assert (await stream.read()).WhichOneof("event") == "started"
        slow = [
            asyncio.ensure_future(
                sql.Query(sql_pb2.QueryRequest(sql="SELECT pg_sleep(1.5)"), timeout=10)
            )
            for _ in range(UNARY)
        ]
        await asyncio.sleep(0.8)  # every query has started
        assert not any(call.done() for call in slow)
        signalled = time.monotonic()
        sidecar.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"), timeout=5)

        results = await asyncio.gather(*slow, return_exceptions=True)
        ended = [await asyncio.wait_for(stream.code(), 5) for stream in streams]
        exit_code = await asyncio.wait_for(sidecar.process.wait(), GRACE + 5)
        took = time.monotonic() - signalled

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert error_info(refused.value).reason == "SHUTTING_DOWN"
    assert ended == [grpc.StatusCode.OK] * STREAMS
    assert exit_code == 0 and took < GRACE
    FIGURES.append(
        f"SIGTERM with {UNARY} unary calls and {STREAMS} streams in flight: all calls "
        f"completed, a new call refused (SHUTTING_DOWN), streams ended OK, exit 0 after "
        f"{took:.2f}s (grace {GRACE:g}s)"
    )
