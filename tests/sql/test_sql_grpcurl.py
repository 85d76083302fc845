"""SqlService as a non-Python client sees it: the real grpcurl binary, typed values in JSON,
everything learned through server reflection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
from support import grpcurl_path

from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e


async def grpcurl(address: str, method: str, data: str) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        "-plaintext",
        "-d",
        data,
        address,
        f"integration.v1.SqlService/{method}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    reply: dict[str, object] = json.loads(out)
    return reply


@pytest.fixture
async def sidecar(make_config: Callable[..., str]) -> AsyncIterator[RunningServer]:
    # The embedded SQLite `sql` next to a postgres service named `db`.
    config = make_config() + "  sql: {type: sql}\n"
    async with serve_for_test(config) as running:
        yield running


async def test_grpcurl_queries_postgres_with_typed_json_values(sidecar: RunningServer) -> None:
    reply = await grpcurl(
        sidecar.address,
        "Query",
        json.dumps(
            {
                "target": "db",
                "sql": "SELECT $1::int8 + 1 AS n, $2::numeric AS d, $3::date AS day",
                "parameters": [
                    {"int_value": "41"},
                    {"decimal_value": "1.10"},
                    {"date_value": "2024-02-29"},
                ],
            }
        ),
    )
    assert reply == {
        "columns": [
            {"name": "n", "type": "int8"},
            {"name": "d", "type": "numeric"},
            {"name": "day", "type": "date"},
        ],
        "rows": [
            {
                "values": [
                    {"int_value": "42"},
                    {"decimal_value": "1.10"},
                    {"date_value": "2024-02-29"},
                ]
            }
        ],
        "command_tag": "SELECT 1",
    }


async def test_grpcurl_executes_on_the_embedded_sqlite(sidecar: RunningServer) -> None:
    created = await grpcurl(
        sidecar.address, "Execute", '{"target": "sql", "sql": "CREATE TABLE t (v)"}'
    )
    inserted = await grpcurl(
        sidecar.address,
        "Execute",
        '{"target": "sql", "sql": "INSERT INTO t VALUES (?), (?)", '
        '"parameters": [{"string_value": "a"}, {"null_value": "NULL_VALUE_UNSPECIFIED"}]}',
    )
    assert created == {"command_tag": "CREATE TABLE"}
    assert inserted == {"command_tag": "INSERT 0 2", "rows_affected": "2"}
