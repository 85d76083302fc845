"""Typed values between protobuf and the domain: exact both ways, and bad input names its
field."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from generated.integration.v1 import common_pb2
from sidecar.backends.sql import Interval, Json
from sidecar.errors import InvalidArgument
from sidecar.servicers._sql_values import parameters_from_proto, value_from_proto, value_to_proto

V = common_pb2.Value
UTC = dt.UTC


@pytest.mark.parametrize(
    ("proto", "domain"),
    [
        (V(), None),
        (V(null_value=common_pb2.NULL_VALUE_UNSPECIFIED), None),
        (V(bool_value=False), False),
        (V(int_value=-(2**63)), -(2**63)),
        (V(double_value=0.1), 0.1),
        (V(decimal_value="-0.000100"), Decimal("-0.000100")),
        (V(string_value=""), ""),
        (V(bytes_value=b"\x00"), b"\x00"),
        (
            V(timestamp_value=timestamp_pb2.Timestamp(seconds=0, nanos=1_000)),
            dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        ),
        (V(duration_value=duration_pb2.Duration(seconds=-1)), dt.timedelta(seconds=-1)),
        (V(json_value="[1]"), Json("[1]")),
        (V(date_value="0001-01-01"), dt.date(1, 1, 1)),
        (
            V(uuid_value="0F8FAD5B-D9CB-469F-A165-70867728950E"),
            uuid.UUID(int=0x0F8FAD5BD9CB469FA16570867728950E),
        ),
        (
            V(interval_value=common_pb2.Interval(months=-1, days=2, microseconds=3)),
            Interval(-1, 2, 3),
        ),
        (
            V(list_value=common_pb2.ListValue(values=[V(int_value=1), V()])),
            [1, None],
        ),
    ],
)
def test_a_proto_value_becomes_its_domain_value(proto: common_pb2.Value, domain: object) -> None:
    assert value_from_proto(proto, "p") == domain


@pytest.mark.parametrize(
    "domain",
    [
        None,
        True,
        -(2**63),
        1.5,
        Decimal("1E-7"),
        "text",
        b"\xff",
        dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=UTC),
        dt.date(2024, 2, 29),
        Interval(14, -3, 1),
        uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e"),
        Json('{"a": null}'),
        [[1, 2], [3, None]],
    ],
)
def test_a_domain_value_survives_the_round_trip(domain: object) -> None:
    assert value_from_proto(value_to_proto(domain), "p") == domain


def test_decimals_are_written_without_exponent() -> None:
    assert value_to_proto(Decimal("1E-7")) == V(decimal_value="0.0000001")
    assert value_to_proto(Decimal("NaN")) == V(decimal_value="NaN")


def test_a_naive_datetime_is_sent_as_its_wall_clock_time_in_utc() -> None:
    value = value_to_proto(dt.datetime(1970, 1, 2))
    assert value.timestamp_value == timestamp_pb2.Timestamp(seconds=86_400)


def test_a_subclass_is_written_like_its_base() -> None:
    class FastUUID(uuid.UUID):
        pass

    value = FastUUID("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert value_to_proto(value) == V(uuid_value="0f8fad5b-d9cb-469f-a165-70867728950e")


def test_an_unknown_type_is_written_as_its_text() -> None:
    assert value_to_proto(dt.time(12, 30)) == V(string_value="12:30:00")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (V(decimal_value="1,5"), "not a decimal number"),
        (V(date_value="29.02.2024"), "not a date"),
        (V(uuid_value="nope"), "not a UUID"),
        (V(timestamp_value=timestamp_pb2.Timestamp(seconds=-(10**12))), "out of range"),
    ],
)
def test_a_malformed_value_is_invalid_argument_naming_its_field(
    bad: common_pb2.Value, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parameters_from_proto([V(int_value=1), bad], "statements[3].parameters")
    assert caught.value.metadata["field"] == "statements[3].parameters[1]"
    assert message in caught.value.message


def test_arrays_deeper_than_six_dimensions_are_refused() -> None:
    value = V(int_value=1)
    for _ in range(7):
        value = V(list_value=common_pb2.ListValue(values=[value]))
    with pytest.raises(InvalidArgument):
        value_from_proto(value, "p")
