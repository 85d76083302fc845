"""A 100,000-row SqlService.QueryStream against PostgreSQL, beside asyncpg used directly.

The sidecar streams the rows in batches (the target's stream_batch_size) over one gRPC
server stream; the direct case reads the same query through an asyncpg cursor in a
transaction, prefetching as many rows per round trip as the sidecar's batch. Rows per second
are medians of interleaved repeats, with the sidecar's CPU time per 1,000 rows.

Usage: python -m bench.sql_stream  (runs when PostgreSQL answers at BENCH_PG_DSN)
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import grpc

from bench.__main__ import (
    PG_DSN,
    REPEATS,
    cpu_seconds,
    free_port,
    postgres_answers,
    serve_command,
    start,
)
from bench.results import record
from generated.integration.v1 import sql_pb2, sql_pb2_grpc

ROWS = 100_000
BATCH = 1_000
SQL = f"SELECT i::int8 AS id, 'row ' || i AS name FROM generate_series(1, {ROWS}) AS i"
CONFIG = """
server: {{access_log: false}}
services:
  sql-bench: {{type: sql, backend: postgres, dsn: "{dsn}", stream_batch_size: {batch}}}
"""


async def _sidecar(address: str) -> float:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = sql_pb2_grpc.SqlServiceStub(channel)
        started = time.perf_counter()
        rows = 0
        async for message in stub.QueryStream(
            sql_pb2.QueryStreamRequest(target="sql-bench", sql=SQL, batch_size=BATCH)
        ):
            rows += len(message.rows)
        elapsed = time.perf_counter() - started
    assert rows == ROWS, rows
    return rows / elapsed


async def _direct() -> float:
    import asyncpg

    connection = await asyncpg.connect(PG_DSN)
    try:
        started = time.perf_counter()
        rows = 0
        async with connection.transaction():
            async for _ in connection.cursor(SQL, prefetch=BATCH):
                rows += 1
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    assert rows == ROWS, rows
    return rows / elapsed


def main() -> int:
    if not postgres_answers(PG_DSN):
        print("\n# sql QueryStream: skipped, no PostgreSQL at BENCH_PG_DSN")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sql.yaml"
        config.write_text(CONFIG.format(dsn=PG_DSN, batch=BATCH))
        address = f"127.0.0.1:{free_port()}"
        process = subprocess.Popen(
            serve_command(config, address),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            start("sql-stream sidecar", [], address, process)
            asyncio.run(_sidecar(address))  # warm: the pool opened, the statement prepared
            sidecar: list[float] = []
            direct: list[float] = []
            cpu: list[float] = []
            for _ in range(REPEATS):
                before = cpu_seconds(process.pid)
                sidecar.append(asyncio.run(_sidecar(address)))
                cpu.append((cpu_seconds(process.pid) - before) / ROWS * 1000 * 1000)
                direct.append(asyncio.run(_direct()))
        finally:
            process.terminate()
            process.wait(10)
    ours, theirs = statistics.median(sidecar), statistics.median(direct)
    print(f"\n# sql QueryStream of {ROWS:,} rows in batches of {BATCH}, {REPEATS} repeats, medians")
    print(f"{'case':<32}{'rows/s':>10}{'sidecar cpu ms/1k rows':>24}{'vs direct':>11}")
    per_1k = statistics.median(cpu)
    print(f"{'sidecar QueryStream':<32}{ours:>10.0f}{per_1k:>24.2f}{ours / theirs:>11.2f}")
    print(f"{'asyncpg cursor direct':<32}{theirs:>10.0f}")
    record(
        "sql_stream",
        "sidecar QueryStream",
        rows_per_s=ours,
        server_cpu_ms_per_1k_rows=per_1k,
        vs_direct=ours / theirs,
    )
    record("sql_stream", "asyncpg cursor direct", rows_per_s=theirs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
