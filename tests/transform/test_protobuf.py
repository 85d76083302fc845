"""JSON <-> Protobuf with protobuf's proto3 JSON mapping, for message types from a
descriptor set compiled by protoc in the test: every scalar type, nested and repeated
fields, maps, oneofs, enums and well-known types survive a round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transform.conftest import compile_descriptor_set
from transform.helpers import transforms_from

from sidecar.config import ConfigError
from sidecar.errors import InvalidArgument
from sidecar.transform import Transforms

ORDER: dict[str, Any] = {
    "id": "o-1",
    "scalars": {
        "fDouble": 1.5,
        "fFloat": 0.25,
        "fInt32": -7,
        "fInt64": "-9007199254740993",
        "fUint32": 4294967295,
        "fUint64": "18446744073709551615",
        "fSint32": -2147483648,
        "fSint64": "-9223372036854775808",
        "fFixed32": 7,
        "fFixed64": "8",
        "fSfixed32": -9,
        "fSfixed64": "-10",
        "fBool": True,
        "fString": "grüße ✓",
        "fBytes": "AAEC/w==",
    },
    "lines": [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 1}],
    "totals": {"eur": "1200", "usd": "-1"},
    "byPosition": {"1": {"sku": "a", "quantity": 2}},
    "voucher": {"sku": "v", "quantity": 1},
    "status": "STATUS_SHIPPED",
    "history": ["STATUS_OPEN", "STATUS_SHIPPED"],
    "created": "2026-12-06T03:04:05.123456789Z",
    "ttl": "3.500s",
    "extra": {"nested": {"list": [1, "two", None, True]}, "n": 1.25},
    "limit": "42",
    "note": "fragile",
    "attachment": {"@type": "type.googleapis.com/shop.v1.Line", "sku": "x", "quantity": 3},
    "priority": 0,
    "anything": [1, {"a": None}],
    "tags": ["red", 2],
    "gift": False,
}


def _config(descriptor_set: Path, unknown: str = "reject", field_names: str = "json") -> str:
    return f"""
transforms:
  order-to-proto:
    steps:
      - json_to_protobuf:
          descriptor_set: {descriptor_set}
          message: shop.v1.Order
          unknown_fields: {unknown}
  proto-to-order:
    steps:
      - protobuf_to_json:
          descriptor_set: {descriptor_set}
          message: shop.v1.Order
          field_names: {field_names}
  tree-to-proto:
    max_depth: 8
    steps:
      - json_to_protobuf: {{descriptor_set: {descriptor_set}, message: shop.v1.Tree}}
"""


async def _round_trip(transforms: Transforms, document: dict[str, Any]) -> Any:
    binary = await transforms.transform(
        "order-to-proto", json.dumps(document).encode(), "application/json"
    )
    assert binary.content_type == "application/x-protobuf"
    back = await transforms.transform("proto-to-order", binary.data, binary.content_type)
    assert back.content_type == "application/json"
    return json.loads(back.data)


async def test_round_trip_keeps_every_field(descriptor_set: Path) -> None:
    transforms = transforms_from(_config(descriptor_set))
    assert await _round_trip(transforms, ORDER) == ORDER


async def test_the_binary_is_the_message_protoc_describes(descriptor_set: Path) -> None:
    """The bytes decode with a class built independently from the same descriptor set."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    transforms = transforms_from(_config(descriptor_set))
    binary = await transforms.transform("order-to-proto", json.dumps(ORDER).encode())
    pool = descriptor_pool.DescriptorPool()
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())  # noqa: ASYNC240 - a small local file
    for file in files.file:
        pool.Add(file)
    order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.v1.Order"))()
    order.ParseFromString(binary.data)
    assert order.scalars.f_uint64 == 2**64 - 1  # type: ignore[attr-defined]
    assert order.WhichOneof("payment") == "voucher"
    assert order.created.nanos == 123456789  # type: ignore[attr-defined]
    assert dict(order.totals) == {"eur": 1200, "usd": -1}  # type: ignore[attr-defined]


async def test_the_other_oneof_member_and_proto_field_names(descriptor_set: Path) -> None:
    transforms = transforms_from(_config(descriptor_set, field_names="proto"))
    document = {"id": "o-2", "card_token": "tok", "by_position": {"3": {"sku": "s"}}}
    assert await _round_trip(transforms, document) == document


async def test_unknown_fields_are_refused_or_ignored_by_option(descriptor_set: Path) -> None:
    data = json.dumps({"id": "o-3", "colour": "red"}).encode()
    with pytest.raises(InvalidArgument) as caught:
        await transforms_from(_config(descriptor_set)).transform("order-to-proto", data)
    assert caught.value.reason == "TRANSFORM_FAILED"
    assert "colour" in caught.value.message
    lenient = transforms_from(_config(descriptor_set, unknown="ignore"))
    assert await _round_trip(lenient, {"id": "o-3", "colour": "red"}) == {"id": "o-3"}


@pytest.mark.parametrize(
    "document",
    [
        {"status": "STATUS_NONE"},
        {"scalars": {"fInt32": "x"}},
        {"scalars": {"fInt32": 2**40}},
        {"created": "yesterday"},
        {"card_token": "t", "voucher": {}},
        {"lines": {"sku": "not a list"}},
        {"attachment": {"@type": "type.googleapis.com/nowhere.Nothing"}},
        [1, 2],
    ],
)
async def test_json_that_is_not_the_message_is_transform_failed(
    descriptor_set: Path, document: Any
) -> None:
    transforms = transforms_from(_config(descriptor_set))
    with pytest.raises(InvalidArgument) as caught:
        await transforms.transform("order-to-proto", json.dumps(document).encode())
    assert caught.value.reason == "TRANSFORM_FAILED"


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80"])
async def test_bytes_that_are_not_the_message_are_transform_failed(
    descriptor_set: Path, data: bytes
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await transforms_from(_config(descriptor_set)).transform("proto-to-order", data)
    assert caught.value.reason == "TRANSFORM_FAILED"


async def test_nesting_past_max_depth_is_value_too_large(descriptor_set: Path) -> None:
    transforms = transforms_from(_config(descriptor_set))
    tree: dict[str, Any] = {"name": "leaf"}
    for level in range(3):
        tree = {"name": f"n{level}", "children": [tree]}
    await transforms.transform("tree-to-proto", json.dumps(tree).encode())
    for level in range(10):
        tree = {"name": f"m{level}", "children": [tree]}
    with pytest.raises(InvalidArgument) as caught:
        await transforms.transform("tree-to-proto", json.dumps(tree).encode())
    assert caught.value.reason == "VALUE_TOO_LARGE"


async def test_well_known_types_come_from_protobuf_when_the_set_lacks_them(
    tmp_path: Path,
) -> None:
    alone = compile_descriptor_set(tmp_path, include_imports=False)
    transforms = transforms_from(_config(alone))
    document = {"id": "o-4", "created": "2026-01-01T00:00:00Z", "extra": {"a": [1]}}
    assert await _round_trip(transforms, document) == document


def test_a_message_the_set_lacks_fails_at_load(descriptor_set: Path) -> None:
    config = f"""
transforms:
  bad:
    steps:
      - json_to_protobuf: {{descriptor_set: {descriptor_set}, message: shop.v1.Nope}}
"""
    with pytest.raises(ConfigError) as caught:
        transforms_from(config)
    assert "has no message type 'shop.v1.Nope'" in str(caught.value)
    assert "transforms.bad.steps[0].json_to_protobuf" in str(caught.value)


def test_a_file_that_is_not_a_descriptor_set_fails_at_load(tmp_path: Path) -> None:
    junk = tmp_path / "junk.binpb"
    junk.write_bytes(b"\xff\xff\xff\xff")
    config = f"""
transforms:
  bad:
    steps: [{{protobuf_to_json: {{descriptor_set: {junk}, message: a.B}}}}]
"""
    with pytest.raises(ConfigError, match="is not a FileDescriptorSet"):
        transforms_from(config)
