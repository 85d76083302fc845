"""A QueryStream of 1,000,000 rows flows through a real sidecar process with bounded memory:
its peak RSS (VmHWM) stays far below what holding the result would take."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc

pytestmark = pytest.mark.e2e

ROWS = 1_000_000
# Holding 1M rows of (int, 32-char text) as asyncpg records alone takes ~205 MB on top of the
# ~60 MB an idle sidecar uses; a stream must stay far below that.
PEAK_RSS_LIMIT_MB = 150


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def wait_until_serving(address: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 20
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.returncode is None, "the sidecar exited"
            try:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_streaming_a_million_rows_keeps_the_sidecar_memory_bounded(
    tmp_path: Path, pg_dsn: str
) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        "server: {access_log: false}\n"
        "services:\n"
        "  db: {type: sql, backend: postgres, dsn: '" + pg_dsn + "', stream_batch_size: 1000}\n"
    )
    address = f"127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--config",
        str(config),
        "--listen",
        address,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until_serving(address, process)
        idle_mb = memory_kb(process.pid, "VmRSS") / 1024
        started = time.monotonic()
        rows = last = 0
        async with grpc.aio.insecure_channel(address) as channel:
            stream = sql_pb2_grpc.SqlServiceStub(channel).QueryStream(
                sql_pb2.QueryStreamRequest(
                    sql="SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, $1::int) g",
                    parameters=[common_pb2.Value(int_value=ROWS)],
                )
            )
            async for message in stream:
                rows += len(message.rows)
                if message.rows:
                    last = message.rows[-1].values[0].int_value
        elapsed = time.monotonic() - started
        peak_mb = memory_kb(process.pid, "VmHWM") / 1024
    finally:
        process.terminate()
        await process.wait()
    print(
        f"\nQueryStream of {rows:,} rows in {elapsed:.1f}s ({rows / elapsed:,.0f} rows/s): "
        f"sidecar peak RSS (VmHWM) {peak_mb:.0f} MB, idle RSS {idle_mb:.0f} MB"
    )
    assert (rows, last) == (ROWS, ROWS)
    assert peak_mb < PEAK_RSS_LIMIT_MB
    assert elapsed < 30
