"""Typed SQL values between protobuf (`integration.v1.Value`) and the domain (`SqlValue`).

Parameters come in through `parameters_from_proto`, which names the offending field in its
INVALID_ARGUMENT errors (`parameters[2]`, `statements[1].parameters[0]`). Rows go out
through `rows_to_proto`, which picks each value's conversion by its Python type, once per
value, with no per-row allocations beyond the messages themselves.

A naive datetime (a SQL `timestamp` without time zone) travels as a `Timestamp` holding its
wall-clock time as if it were UTC, and a `Timestamp` parameter bound to such a column is
stored as its UTC wall-clock time, so values round-trip exactly.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from generated.integration.v1 import common_pb2, sql_pb2
from sidecar.backends.sql import Column, Interval, Json, Row, SqlValue
from sidecar.servicers._common import invalid

__all__ = [
    "columns_to_proto",
    "parameters_from_proto",
    "rows_to_proto",
    "value_from_proto",
    "value_to_proto",
]

_EPOCH_AWARE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_NULL = common_pb2.Value(null_value=common_pb2.NULL_VALUE_UNSPECIFIED)
_MAX_DEPTH = 6  # PostgreSQL arrays have at most 6 dimensions


# -- proto -> domain ---------------------------------------------------------------------------


def parameters_from_proto(values: Iterable[common_pb2.Value], field: str) -> tuple[SqlValue, ...]:
    """The domain values of a `repeated Value parameters` field named `field`."""
    return tuple(value_from_proto(value, f"{field}[{i}]") for i, value in enumerate(values))


def value_from_proto(value: common_pb2.Value, field: str, depth: int = 0) -> SqlValue:
    """One domain value; raises INVALID_ARGUMENT naming `field` when it cannot be one."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    reader = _FROM_PROTO.get(kind)
    if reader is not None:
        return reader(value, field)
    if kind == "list_value":
        if depth >= _MAX_DEPTH:
            raise invalid(field, f"arrays nest at most {_MAX_DEPTH} deep")
        return [
            value_from_proto(item, f"{field}[{i}]", depth + 1)
            for i, item in enumerate(value.list_value.values)
        ]
    raise invalid(field, f"unsupported value kind {kind}")


def _decimal(value: common_pb2.Value, field: str) -> Decimal:
    try:
        return Decimal(value.decimal_value.strip())
    except InvalidOperation:
        raise invalid(field, f"not a decimal number: {value.decimal_value[:40]!r}") from None


def _timestamp(value: common_pb2.Value, field: str) -> dt.datetime:
    stamp = value.timestamp_value
    try:
        return _EPOCH_AWARE + dt.timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)
    except OverflowError:
        raise invalid(field, "timestamp out of range (years 1 to 9999)") from None


def _duration(value: common_pb2.Value, field: str) -> dt.timedelta:
    duration = value.duration_value
    try:
        return dt.timedelta(seconds=duration.seconds, microseconds=duration.nanos // 1000)
    except OverflowError:
        raise invalid(field, "duration out of range") from None


def _date(value: common_pb2.Value, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.date_value)
    except ValueError:
        raise invalid(field, f"not a date (YYYY-MM-DD): {value.date_value[:40]!r}") from None


def _uuid(value: common_pb2.Value, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.uuid_value)
    except ValueError:
        raise invalid(field, f"not a UUID: {value.uuid_value[:40]!r}") from None


def _interval(value: common_pb2.Value, field: str) -> Interval:
    interval = value.interval_value
    return Interval(interval.months, interval.days, interval.microseconds)


_FROM_PROTO: dict[str, Callable[[common_pb2.Value, str], SqlValue]] = {
    "bool_value": lambda v, _: v.bool_value,
    "int_value": lambda v, _: v.int_value,
    "double_value": lambda v, _: v.double_value,
    "decimal_value": _decimal,
    "string_value": lambda v, _: v.string_value,
    "bytes_value": lambda v, _: v.bytes_value,
    "timestamp_value": _timestamp,
    "duration_value": _duration,
    "json_value": lambda v, _: Json(v.json_value),
    "date_value": _date,
    "uuid_value": _uuid,
    "interval_value": _interval,
}


# -- domain -> proto ---------------------------------------------------------------------------


def columns_to_proto(columns: Sequence[Column]) -> list[sql_pb2.Column]:
    """The proto columns."""
    return [sql_pb2.Column(name=column.name, type=column.type) for column in columns]


def rows_to_proto(rows: Iterable[Row]) -> list[sql_pb2.Row]:
    """The proto rows."""
    convert = value_to_proto
    return [sql_pb2.Row(values=[convert(value) for value in row]) for row in rows]


def value_to_proto(value: Any) -> common_pb2.Value:
    """One proto value; a type with no kind of its own is sent as its text."""
    writer = _TO_PROTO.get(type(value))
    if writer is None:
        writer = _TO_PROTO[type(value)] = _writer_for(type(value))
    return writer(value)


def _writer_for(kind: type) -> Callable[[Any], common_pb2.Value]:
    """The writer of the nearest known base class (asyncpg's UUID subclasses uuid.UUID, a
    composite row is a tuple), else the text form."""
    for base in kind.__mro__[1:]:
        writer = _TO_PROTO.get(base)
        if writer is not None and base is not object:
            return writer
    if issubclass(kind, tuple):
        return _list
    return _text


def _text(value: Any) -> common_pb2.Value:
    return common_pb2.Value(string_value=str(value))


def _timestamp_to_proto(value: dt.datetime) -> common_pb2.Value:
    delta = value - (_EPOCH_NAIVE if value.tzinfo is None else _EPOCH_AWARE)
    stamp = timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )
    return common_pb2.Value(timestamp_value=stamp)


def _timedelta_to_proto(value: dt.timedelta) -> common_pb2.Value:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return common_pb2.Value(duration_value=duration)


def _interval_to_proto(value: Interval) -> common_pb2.Value:
    return common_pb2.Value(
        interval_value=common_pb2.Interval(
            months=value.months, days=value.days, microseconds=value.microseconds
        )
    )


def _list(value: Sequence[Any]) -> common_pb2.Value:
    return common_pb2.Value(
        list_value=common_pb2.ListValue(values=[value_to_proto(item) for item in value])
    )


_TO_PROTO: dict[type, Callable[[Any], common_pb2.Value]] = {
    type(None): lambda _: _NULL,
    bool: lambda v: common_pb2.Value(bool_value=v),
    int: lambda v: common_pb2.Value(int_value=v),
    float: lambda v: common_pb2.Value(double_value=v),
    Decimal: lambda v: common_pb2.Value(decimal_value=format(v, "f")),
    str: lambda v: common_pb2.Value(string_value=v),
    bytes: lambda v: common_pb2.Value(bytes_value=v),
    dt.datetime: _timestamp_to_proto,
    dt.date: lambda v: common_pb2.Value(date_value=v.isoformat()),
    dt.timedelta: _timedelta_to_proto,
    Interval: _interval_to_proto,
    uuid.UUID: lambda v: common_pb2.Value(uuid_value=str(v)),
    Json: lambda v: common_pb2.Value(json_value=v.text),
    list: _list,
}
