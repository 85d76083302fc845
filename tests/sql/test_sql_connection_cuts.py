"""A PostgreSQL connection cut under a Transaction or a QueryStream (issue #10, item 11):
the caller gets UNAVAILABLE (or ABORTED / DEADLINE_EXCEEDED), never INTERNAL, and a COMMIT
whose outcome is unknown says so with its own reason and is never retried.

The cuts come from a TCP proxy between the sidecar and the real PostgreSQL; what was
committed is read through a direct connection, around the proxy.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from faultproxy import FaultProxy
from support import error_info

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]
V = common_pb2.Value
Code = grpc.StatusCode
# What a cut may answer; INTERNAL (or anything else) is a bug.
HONEST_CODES = {Code.OK, Code.UNAVAILABLE, Code.ABORTED, Code.DEADLINE_EXCEEDED}
# The simple-protocol message asyncpg sends to commit: 'Q', its length, the text, NUL.
COMMIT_MESSAGE = b"Q\x00\x00\x00\x0bCOMMIT\x00"


class CommitCuttingProxy(FaultProxy):
    """A FaultProxy that can also cut every connection at a COMMIT going upstream: before
    it reaches the database (`deliver=False`), or after, losing only its answer."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._commit_cut: bool | None = None
        self.commit_cut_done = asyncio.Event()

    def cut_at_next_commit(self, *, deliver: bool) -> None:
        self._commit_cut = deliver
        self.commit_cut_done.clear()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = writer.get_extra_info("peername")[1] == self.target_port
        try:
            while chunk := await reader.read(65_536):
                deliver = self._commit_cut
                if upstream and deliver is not None and COMMIT_MESSAGE in chunk:
                    self._commit_cut = None
                    await self._cut_at_commit(writer, chunk, deliver)
                    return
                await self._resume.wait()
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            writer.transport.abort()

    async def _cut_at_commit(
        self, writer: asyncio.StreamWriter, chunk: bytes, deliver: bool
    ) -> None:
        if deliver:
            self.paused = True  # the database's answer waits here, then is lost in the cut
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.2)  # the database commits meanwhile
        self.commit_cut_done.set()
        self.paused = False
        await self.cut()


@dataclass
class Setup:
    sql: sql_pb2_grpc.SqlServiceStub
    proxy: CommitCuttingProxy
    direct: asyncpg.Connection
    table: str

    async def rows(self) -> list[int]:
        return [r["id"] for r in await self.direct.fetch(f"SELECT id FROM {self.table}")]


def stmt(sql: str, *params: common_pb2.Value) -> sql_pb2.Statement:
    return sql_pb2.Statement(sql=sql, parameters=list(params))


@pytest.fixture
async def setup(
    postgres: Any, pg_database: str, pg_dsn: str, table: str, config_for: Callable[..., str]
) -> AsyncIterator[Setup]:
    direct = await asyncpg.connect(pg_dsn)
    await direct.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    async with CommitCuttingProxy(postgres.host, postgres.port) as proxy:
        dsn = postgres.dsn(pg_database, host=proxy.host, port=proxy.port)
        config = config_for(
            dsn,
            connection_pool="{min_connections: 1, max_connections: 4, acquire_timeout: 5s}",
            # Retries on: a COMMIT of unknown outcome must still not be sent twice.
            retry_policy="{max_retries: 3, base_delay: 10ms}",
            circuit_breaker="{enabled: false}",
        )
        async with (
            serve_for_test(config) as running,
            grpc.aio.insecure_channel(running.address) as channel,
        ):
            yield Setup(sql_pb2_grpc.SqlServiceStub(channel), proxy, direct, table)
    await direct.close()


IDEMPOTENT = (("idempotency-key", "k1"),)


async def test_a_cut_during_a_statement_is_unavailable_and_commits_nothing(
    setup: Setup, expect_error: ExpectError
) -> None:
    call = setup.sql.Transaction(
        sql_pb2.TransactionRequest(
            statements=[
                stmt(f"INSERT INTO {setup.table} VALUES ($1)", V(int_value=1)),
                stmt("SELECT pg_sleep(5)"),
            ]
        )
    )
    await asyncio.sleep(0.5)  # inside pg_sleep
    await setup.proxy.cut()
    await expect_error(call, Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert await setup.rows() == []


@pytest.mark.parametrize("delivered", [False, True], ids=["commit-lost", "answer-lost"])
async def test_a_cut_at_commit_says_the_outcome_is_unknown_and_is_not_retried(
    setup: Setup, expect_error: ExpectError, delivered: bool
) -> None:
    setup.proxy.cut_at_next_commit(deliver=delivered)
    await expect_error(
        setup.sql.Transaction(
            sql_pb2.TransactionRequest(
                statements=[stmt(f"INSERT INTO {setup.table} VALUES ($1)", V(int_value=7))]
            ),
            metadata=IDEMPOTENT,
        ),
        Code.UNAVAILABLE,
        "COMMIT_OUTCOME_UNKNOWN",
    )
    assert setup.proxy.commit_cut_done.is_set()
    # Delivered, the COMMIT took effect although nobody heard of it; lost, it did not.
    # Either way exactly once: retrying would have inserted again (or failed on the key).
    assert await setup.rows() == ([7] if delivered else [])


async def test_a_cut_during_a_stream_is_unavailable(
    setup: Setup, expect_error: ExpectError
) -> None:
    call = setup.sql.QueryStream(
        sql_pb2.QueryStreamRequest(
            sql="SELECT g, CASE WHEN g > 10 THEN pg_sleep(5) END FROM generate_series(1, 20) g",
            batch_size=10,
        )
    )
    first = await call.read()
    assert len(first.rows) == 10  # type: ignore[union-attr]
    await asyncio.sleep(0.3)  # the second batch is running
    await setup.proxy.cut()
    await expect_error(_drain(call), Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")


async def test_random_cuts_never_answer_internal_and_not_committed_means_absent(
    setup: Setup,
) -> None:
    chance = random.Random(1011)
    for key in range(40):
        transaction = setup.sql.Transaction(
            sql_pb2.TransactionRequest(
                statements=[
                    stmt(f"INSERT INTO {setup.table} VALUES ($1)", V(int_value=key)),
                    stmt("SELECT pg_sleep(0.01)"),
                    stmt("SELECT 1"),
                ]
            ),
            timeout=10,
        )
        stream = setup.sql.QueryStream(
            sql_pb2.QueryStreamRequest(
                sql="SELECT pg_sleep(0.002) FROM generate_series(1, 10)", batch_size=2
            ),
            timeout=10,
        )
        outcomes = asyncio.gather(_outcome(transaction), _outcome(_drain(stream)))
        await asyncio.sleep(chance.uniform(0, 0.04))
        await setup.proxy.cut()
        (code, reason), stream_outcome = await outcomes
        assert code in HONEST_CODES, (key, code, reason)
        assert stream_outcome[0] in HONEST_CODES, (key, stream_outcome)
        committed = key in await setup.rows()
        if code is Code.OK:
            assert committed, key
        elif reason != "COMMIT_OUTCOME_UNKNOWN":
            assert not committed, (key, code, reason)  # "not committed" must be true


async def _outcome(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        try:
            reason = error_info(error).reason
        except AssertionError:
            reason = "(no ErrorInfo)"
        return error.code(), reason
    return Code.OK, ""


async def _drain(call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
    while await call.read() is not grpc.aio.EOF:
        pass
