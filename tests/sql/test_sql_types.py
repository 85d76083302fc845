"""Every SQL type of the issue round-trips exactly through the real sidecar and PostgreSQL:
bound as a typed parameter, stored, and read back as the same typed value."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc

pytestmark = pytest.mark.e2e

V = common_pb2.Value
NULL = V(null_value=common_pb2.NULL_VALUE_UNSPECIFIED)
STAMP = timestamp_pb2.Timestamp(seconds=1_709_208_000, nanos=123_456_000)  # 2024-02-29T12:00Z


def values(*items: common_pb2.Value) -> common_pb2.Value:
    return V(list_value=common_pb2.ListValue(values=list(items)))


# (SQL type, the value sent and expected back)
CASES = [
    ("boolean", V(bool_value=True)),
    ("int2", V(int_value=-32_768)),
    ("int4", V(int_value=2_147_483_647)),
    ("int8", V(int_value=-9_223_372_036_854_775_808)),
    ("float4", V(double_value=0.5)),
    ("float8", V(double_value=-1.25e300)),
    ("numeric", V(decimal_value="12345678901234567890.123456789000")),
    ("numeric", V(decimal_value="0.0000001")),
    ("numeric", V(decimal_value="NaN")),
    ("text", V(string_value="héllo ✓ wörld")),
    ("varchar", V(string_value="")),
    ("bytea", V(bytes_value=bytes(range(256)))),
    ("date", V(date_value="2024-02-29")),
    ("timestamp", V(timestamp_value=STAMP)),
    ("timestamptz", V(timestamp_value=STAMP)),
    (
        "interval",
        V(interval_value=common_pb2.Interval(months=14, days=-3, microseconds=3_723_000_001)),
    ),
    ("uuid", V(uuid_value="0f8fad5b-d9cb-469f-a165-70867728950e")),
    ("json", V(json_value='{"b": [1, 2.5, null], "a": "x"}')),
    ("jsonb", V(json_value='{"a": "x", "b": [1, 2.5, null]}')),
    ("int8[]", values(V(int_value=1), NULL, V(int_value=3))),
    (
        "text[]",
        values(
            values(V(string_value="a"), V(string_value="b")),
            values(V(string_value="c"), V(string_value="d")),
        ),
    ),
    ("uuid[]", values(V(uuid_value="0f8fad5b-d9cb-469f-a165-70867728950e"))),
    ("timestamptz[]", values(V(timestamp_value=STAMP), NULL)),
    ("numeric[]", values(V(decimal_value="1.50"), V(decimal_value="-2"))),
    ("int8", NULL),
    ("text", NULL),
]


@pytest.mark.parametrize(
    ("sql_type", "value"), CASES, ids=[f"{t}-{v.WhichOneof('kind')}" for t, v in CASES]
)
async def test_typed_parameter_comes_back_as_the_same_typed_value(
    sql: sql_pb2_grpc.SqlServiceStub, sql_type: str, value: common_pb2.Value
) -> None:
    reply = await sql.Query(
        sql_pb2.QueryRequest(sql=f"SELECT $1::{sql_type} AS v", parameters=[value])
    )
    assert reply.rows[0].values[0] == value


async def test_columns_carry_names_and_database_types(sql: sql_pb2_grpc.SqlServiceStub) -> None:
    reply = await sql.Query(
        sql_pb2.QueryRequest(
            sql="SELECT 1::int8 AS id, 'x'::text AS name, ARRAY[1]::int4[] AS tags, "
            "now() AS at, '{}'::jsonb AS doc, 1.5::numeric(10, 2) AS price"
        )
    )
    assert [(c.name, c.type) for c in reply.columns] == [
        ("id", "int8"),
        ("name", "text"),
        ("tags", "int4[]"),
        ("at", "timestamptz"),
        ("doc", "jsonb"),
        ("price", "numeric"),
    ]


async def test_every_type_survives_a_table_round_trip(
    sql: sql_pb2_grpc.SqlServiceStub, table: str
) -> None:
    columns = [(f"c{i}", sql_type) for i, (sql_type, _) in enumerate(CASES)]
    await sql.Execute(
        sql_pb2.ExecuteRequest(
            sql=f"CREATE TABLE {table} ({', '.join(f'{n} {t}' for n, t in columns)})"
        )
    )
    placeholders = ", ".join(f"${i + 1}" for i in range(len(CASES)))
    inserted = await sql.Execute(
        sql_pb2.ExecuteRequest(
            sql=f"INSERT INTO {table} VALUES ({placeholders})",
            parameters=[value for _, value in CASES],
        )
    )
    reply = await sql.Query(sql_pb2.QueryRequest(sql=f"SELECT * FROM {table}"))
    assert (inserted.command_tag, inserted.rows_affected) == ("INSERT 0 1", 1)
    assert list(reply.rows[0].values) == [value for _, value in CASES]


async def test_a_duration_parameter_binds_to_an_interval(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    reply = await sql.Query(
        sql_pb2.QueryRequest(
            sql="SELECT $1::interval AS v",
            parameters=[V(duration_value=duration_pb2.Duration(seconds=90, nanos=500_000_000))],
        )
    )
    assert reply.rows[0].values[0].interval_value == common_pb2.Interval(microseconds=90_500_000)


async def test_a_timestamp_without_time_zone_reads_as_its_wall_clock_time(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT '2024-02-29 12:00:00'::timestamp"))
    assert reply.rows[0].values[0].timestamp_value == timestamp_pb2.Timestamp(seconds=1_709_208_000)


async def test_other_types_arrive_as_their_text(sql: sql_pb2_grpc.SqlServiceStub) -> None:
    reply = await sql.Query(
        sql_pb2.QueryRequest(sql="SELECT '10.1.2.3'::inet, '12:30:00'::time, ROW(1, 'a')")
    )
    assert list(reply.rows[0].values) == [
        V(string_value="10.1.2.3"),
        V(string_value="12:30:00"),
        values(V(int_value=1), V(string_value="a")),
    ]


async def test_a_value_of_the_wrong_type_is_invalid_argument(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sql.Query(
            sql_pb2.QueryRequest(sql="SELECT $1::int8", parameters=[V(string_value="5")])
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
