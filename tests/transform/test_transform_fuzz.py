"""Fuzzing Transform through the real gRPC server with hypothesis: random bytes, deep
nesting and huge documents always get a clear status (OK, INVALID_ARGUMENT or
RESOURCE_EXHAUSTED with an ErrorInfo reason), never INTERNAL or UNKNOWN, and the process's
memory stays bounded.

The sidecar runs on an event loop of its own in a thread, so hypothesis drives it with a
plain (synchronous) gRPC client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transform.conftest import rss_bytes

from generated.integration.v1 import transform_pb2
from generated.integration.v1.transform_pb2_grpc import TransformServiceStub
from sidecar.testing import serve_for_test

_MIB = 1024 * 1024
_CLEAR = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_REASONS = {
    "INVALID_REQUEST",
    "VALUE_TOO_LARGE",
    "TRANSFORM_FAILED",
    "SCHEMA_VIOLATION",
    "TRANSFORM_LIMIT_EXCEEDED",
    "RESULT_TOO_LARGE",
}
_NAMES = ["xml_to_json", "orders", "validate:order", "to-proto", "from-proto", "tree"]
_CONTENT_TYPES = ["", "application/xml", "application/json", "application/x-protobuf", "x/y"]
_FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _config(descriptor_set: Path) -> str:
    return f"""
schemas:
  order:
    schema:
      type: object
      properties:
        order: {{type: object, required: ["@_id"], properties: {{item: {{type: array}}}}}}
transforms:
  orders:
    steps: [xml_to_json, "validate:order"]
  to-proto:
    steps:
      - json_to_protobuf: {{descriptor_set: {descriptor_set}, message: shop.v1.Order}}
  from-proto:
    steps:
      - protobuf_to_json: {{descriptor_set: {descriptor_set}, message: shop.v1.Order}}
  tree:
    steps:
      - json_to_protobuf: {{descriptor_set: {descriptor_set}, message: shop.v1.Tree}}
      - protobuf_to_json: {{descriptor_set: {descriptor_set}, message: shop.v1.Tree}}
"""


@pytest.fixture(scope="module")
def stub(descriptor_set: Path) -> Iterator[TransformServiceStub]:
    """A sidecar serving on its own loop in a thread, and a synchronous stub for it."""
    ready = threading.Event()
    address: list[str] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with serve_for_test(_config(descriptor_set)) as running:
            address.append(running.address)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    with grpc.insecure_channel(address[0]) as channel:
        yield TransformServiceStub(channel)
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    loop.close()


def _clear_status(stub: TransformServiceStub, name: str, data: bytes, content_type: str) -> None:
    request = transform_pb2.TransformRequest(transform=name, input=data, content_type=content_type)
    try:
        stub.Transform(request, timeout=30)
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        assert code in _CLEAR, (code, error.details())  # type: ignore[attr-defined]
        trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        info = error_details_pb2.ErrorInfo()
        assert any(detail.Unpack(info) for detail in status.details)
        assert info.reason in _REASONS, info.reason


_XML_PIECES = st.sampled_from(
    [
        "<a>",
        "</a>",
        "<b x='1'>",
        "</b>",
        "<a/>",
        "text",
        "&amp;",
        "&lol;",
        "<![CDATA[x]]>",
        "<!DOCTYPE a>",
        "<!DOCTYPE a [<!ENTITY lol 'x'>]>",
        "<!ENTITY e SYSTEM 'http://x/'>",
        "<?xml version='1.0'?>",
        "<!-- c -->",
        "xmlns:p='urn:p'",
        "<p:a>",
        "</p:a>",
        " ",
        "\x00",
        "\ud7ff",
        "<item>",
        "</item>",
        "<order id='1'>",
        "</order>",
    ]
)
_JSON_PIECES = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        '"a"',
        ":",
        ",",
        "1",
        "-0.5e9",
        "null",
        "true",
        '"\\ud800"',
        "NaN",
        '"id"',
        '"lines"',
        '"sku"',
        '"@type"',
        '"created"',
        '"2026-01-01T00:00:00Z"',
        '"name"',
        '"children"',
        "18446744073709551616",
        '"totals"',
        '"status"',
        '"STATUS_OPEN"',
    ]
)


@_FUZZ
@given(
    name=st.sampled_from(_NAMES),
    content_type=st.sampled_from(_CONTENT_TYPES),
    data=st.binary(max_size=4096),
)
def test_random_bytes(
    stub: TransformServiceStub, name: str, content_type: str, data: bytes
) -> None:
    _clear_status(stub, name, data, content_type)


@_FUZZ
@given(
    name=st.sampled_from(_NAMES),
    pieces=st.lists(st.one_of(_XML_PIECES, _JSON_PIECES), max_size=200),
)
def test_documents_made_of_meaningful_pieces(
    stub: TransformServiceStub, name: str, pieces: list[str]
) -> None:
    _clear_status(stub, name, "".join(pieces).encode(errors="surrogatepass"), "")


@_FUZZ
@given(
    name=st.sampled_from(_NAMES),
    opening=st.sampled_from(
        ["<a>", "[", '{"a":', '{"children":[{"name":"x","children":[', "<b x='1'>"]
    ),
    depth=st.integers(min_value=1, max_value=300_000),
    closed=st.booleans(),
)
def test_deep_nesting(
    stub: TransformServiceStub, name: str, opening: str, depth: int, closed: bool
) -> None:
    closing = {"<a>": "</a>", "[": "]", '{"a":': "}", "<b x='1'>": "</b>"}.get(opening, "]}")
    depth = min(depth, 3 * _MIB // (len(opening) + len(closing)))  # gRPC's 4 MiB requests
    data = opening * depth + ("1" if opening != "<a>" else "") + (closing * depth if closed else "")
    _clear_status(stub, name, data.encode(), "")


@_FUZZ
@given(
    name=st.sampled_from(_NAMES),
    unit=st.sampled_from(["<item>x</item>", '{"id":"1"},', "<i a='1' b='2'/>", "7,", "\x08"]),
    megabytes=st.floats(min_value=0.01, max_value=3.0),
)
def test_huge_documents(stub: TransformServiceStub, name: str, unit: str, megabytes: float) -> None:
    count = int(megabytes * _MIB / len(unit))
    if unit.startswith("<"):
        data = "<order id='1'>" + unit * count + "</order>"
    else:
        data = "[" + (unit * count).rstrip(",") + "]"
    _clear_status(stub, name, data.encode(), "")


@_FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.lists(_JSON_PIECES, max_size=300).map(lambda pieces: "".join(pieces).encode()),
    )
)
def test_validate_random_documents(stub: TransformServiceStub, data: bytes) -> None:
    try:
        reply = stub.Validate(transform_pb2.ValidateRequest(schema="order", json=data), timeout=30)
    except grpc.RpcError as error:
        assert error.code() in _CLEAR, error.details()  # type: ignore[attr-defined]
        return
    assert reply.valid == (not reply.violations)


def test_memory_stays_bounded(stub: TransformServiceStub) -> None:
    """After the fuzzing above, a burst of the largest accepted inputs adds little."""
    before = rss_bytes()
    document = b"<order id='1'>" + b"<item a='1'>x</item>" * 50_000 + b"</order>"  # ~1 MiB
    for name in ("xml_to_json", "orders"):
        for _ in range(10):
            _clear_status(stub, name, document[: 1024 * 1024 - 8] + b"</order>", "")
    grown = rss_bytes() - before
    assert grown < 150 * _MIB, f"resident memory grew by {grown / _MIB:.0f} MiB"
