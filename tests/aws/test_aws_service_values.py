"""AwsService's values and bounds: the `allow:` list checked at load, JSON <-> botocore by
the operation's shapes (timestamps, longs, blobs, documents), and the request bounds."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import grpc
import pytest
from aws.aws_service_support import aws_config, aws_sidecar, plain, struct
from aws_server import MotoServer
from botocore.loaders import create_loader
from botocore.model import ServiceModel, Shape
from support import error_info

from generated.integration.v1 import aws_pb2
from sidecar.backends.cloud.aws import idempotent
from sidecar.backends.cloud.aws_shapes import TooLarge, to_botocore, to_json
from sidecar.config import CloudServiceConfig, ConfigError, parse_config
from sidecar.errors import InvalidArgument

Code = grpc.StatusCode
CLOUD = "services:\n  aws: {{type: cloud, region: us-east-1, allow: {allow}}}\n"


def _shape(service: str, operation: str) -> Shape:
    data = create_loader().load_service_model(service, "service-2")
    shape = ServiceModel(data, service_name=service).operation_model(operation).input_shape
    assert shape is not None
    return shape


# -- config ----------------------------------------------------------------------------------


def test_the_allow_list_defaults_to_nothing_and_takes_service_operation_patterns() -> None:
    config = parse_config(CLOUD.format(allow="[]"))
    assert isinstance(config.services["aws"], CloudServiceConfig)
    assert config.services["aws"].allow == ()
    allow = "['dynamodb:GetItem', 'dynamodb:Batch*', 's3:ListObjectsV2', 'sns:*']"
    service = parse_config(CLOUD.format(allow=allow)).services["aws"]
    assert isinstance(service, CloudServiceConfig)
    assert service.allow == ("dynamodb:GetItem", "dynamodb:Batch*", "s3:ListObjectsV2", "sns:*")


@pytest.mark.parametrize(
    "pattern",
    ["DynamoDB:GetItem", "dynamodb", "dynamodb:", ":GetItem", "dynamodb:Get_Item", "dynamodb:Get?"],
)
def test_a_bad_allow_pattern_is_refused_at_load(pattern: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(CLOUD.format(allow=f"['{pattern}']"))
    assert "services.aws.allow[0]" in str(raised.value)
    assert "service:Operation" in str(raised.value)


def test_the_allow_list_is_bounded() -> None:
    many = "[" + ", ".join(f"'sns:Op{i}'" for i in range(257)) + "]"
    with pytest.raises(ConfigError) as raised:
        parse_config(CLOUD.format(allow=many))
    assert "services.aws.allow" in str(raised.value)


def test_only_operations_named_as_reads_are_retried() -> None:
    reads = ["GetItem", "DescribeTable", "ListTables", "HeadObject", "Query", "Scan"]
    writes = ["PutItem", "Publish", "Invoke", "CreateTable", "BatchWriteItem", "DeleteItem"]
    assert all(idempotent(name) for name in [*reads, "BatchGetItem"])
    assert not any(idempotent(name) for name in writes)


# -- JSON -> botocore ------------------------------------------------------------------------


def test_timestamps_take_iso_8601_or_epoch_seconds() -> None:
    shape = _shape("cloudwatch", "GetMetricStatistics")
    base = {"Namespace": "n", "MetricName": "m", "Period": 60, "Statistics": ["Sum"]}
    converted = to_botocore(
        {**base, "StartTime": "2026-01-02T03:04:05Z", "EndTime": 1767323045.0}, shape, "p"
    )
    assert converted["StartTime"] == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert converted["EndTime"] == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert isinstance(converted["Period"], int)
    with pytest.raises(InvalidArgument) as raised:
        to_botocore({**base, "StartTime": "yesterday", "EndTime": 0}, shape, "p")
    assert raised.value.metadata["field"] == "p.StartTime"


def test_longs_beyond_2_53_travel_as_strings() -> None:
    shape = _shape("s3", "PutObject")
    converted = to_botocore(
        {"Bucket": "b", "Key": "k", "ContentLength": "9007199254740993"}, shape, "p"
    )
    assert converted["ContentLength"] == 2**53 + 1
    with pytest.raises(InvalidArgument):
        to_botocore({"Bucket": "b", "Key": "k", "ContentLength": 2.0**60}, shape, "p")
    assert to_json({"Size": 2**53 + 1, "Small": 7}, 1000) == {
        "Size": "9007199254740993",
        "Small": 7,
    }


def test_map_keys_that_are_not_plain_names_are_quoted_in_paths() -> None:
    shape = _shape("dynamodb", "PutItem")
    with pytest.raises(InvalidArgument) as raised:
        to_botocore({"TableName": "t", "Item": {"a.b c": {"S": 5}}}, shape, "p")
    assert raised.value.metadata["field"] == "p.Item['a.b c'].S"


def test_answers_turn_bytes_and_datetimes_into_json_within_a_budget() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    answer = {"Body": b"\x00\xff", "When": when, "List": [1.5, True, None]}
    assert to_json(answer, 1000) == {
        "Body": base64.b64encode(b"\x00\xff").decode(),
        "When": "2026-01-02T01:04:05.600000Z",
        "List": [1.5, True, None],
    }
    with pytest.raises(TooLarge):
        to_json({"Items": ["x" * 100] * 20}, 1000)


# -- bounds through the server ---------------------------------------------------------------


def _nested(depth: int) -> list[Any]:
    """Arrays in arrays: protobuf decodes deeper arrays than objects (two messages a level
    against three), so this reaches AwsService's own bound of 32 levels."""
    value: list[Any] = ["leaf"]
    for _ in range(depth - 1):
        value = [value]
    return value


async def test_parameters_nesting_too_deep_are_refused(moto_server: MotoServer) -> None:
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        before = len(moto_server.log())
        item = {"pk": {"L": _nested(40)}}
        request = aws_pb2.CallRequest(
            service="dynamodb",
            operation="PutItem",
            parameters=struct({"TableName": "t", "Item": item}),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await aws.Call(request)
        assert raised.value.code() == Code.INVALID_ARGUMENT
        assert "nests deeper than 32" in (raised.value.details() or "")
        assert len(moto_server.log()) == before

        bad_pages = aws_pb2.PaginateRequest(service="dynamodb", operation="Scan", max_pages=-1)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            [page async for page in aws.Paginate(bad_pages)]
        assert error_info(raised.value).metadata["field"] == "max_pages"


async def test_large_requests_and_answers_are_converted_off_the_event_loop(
    moto_server: MotoServer,
) -> None:
    """A 300 KB item: its PutItem parameters and its GetItem answer both pass the 256 KiB
    line, so both take the worker-thread path, and round-trip exactly."""
    async with aws_sidecar(aws_config(moto_server)) as (_, aws):
        definition = {
            "TableName": "svc-large",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }
        await aws.Call(
            aws_pb2.CallRequest(
                service="dynamodb", operation="CreateTable", parameters=struct(definition)
            )
        )
        text = "t" * 300_000
        key = {"pk": {"S": "big"}}
        await aws.Call(
            aws_pb2.CallRequest(
                service="dynamodb",
                operation="PutItem",
                parameters=struct({"TableName": "svc-large", "Item": {**key, "v": {"S": text}}}),
            )
        )
        got = await aws.Call(
            aws_pb2.CallRequest(
                service="dynamodb",
                operation="GetItem",
                parameters=struct({"TableName": "svc-large", "Key": key}),
            )
        )
        assert plain(got.result)["Item"]["v"]["S"] == text
