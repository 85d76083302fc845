"""Transforms where HttpService moves data, against a real local XML upstream: an XML API
answered as JSON, a JSON body validated (and nothing sent when it fails), per upstream and
per call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from support import error_info
from transform.xml_upstream import XmlUpstream

from generated.integration.v1 import http_pb2
from generated.integration.v1.http_pb2_grpc import HttpServiceStub
from sidecar.testing import serve_for_test

ORDER_JSON = {
    "order": {
        "@_xmlns:erp": "urn:erp",
        "@_id": "7",
        "item": [{"@_sku": "a-1", "#text": "2"}, {"@_sku": "b-2", "#text": "1"}],
        "erp:note": {"@_lang": "en", "#text": "leave at the door"},
    }
}


def _config(upstream: XmlUpstream) -> str:
    return f"""
schemas:
  new-order:
    schema:
      type: object
      required: [sku, quantity]
      properties:
        quantity: {{type: integer, minimum: 1}}
  erp-order:
    schema: {{type: object, required: [order]}}
transforms:
  erp-orders:
    steps: [xml_to_json, "validate:erp-order"]
services:
  erp:
    type: api
    base_url: {upstream.url}
    response_transform: xml_to_json
    request_transform: validate:new-order
  raw:
    type: api
    base_url: {upstream.url}
"""


@pytest.fixture
async def http(xml_upstream: XmlUpstream) -> AsyncIterator[HttpServiceStub]:
    async with (
        serve_for_test(_config(xml_upstream)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield HttpServiceStub(channel)


def _call(**request: object) -> http_pb2.HttpServiceCallRequest:
    return http_pb2.HttpServiceCallRequest(request=http_pb2.HttpRequest(**request))  # type: ignore[arg-type]


def _header(reply: http_pb2.HttpServiceCallResponse, name: str) -> list[str]:
    return [h.value for h in reply.headers if h.name.lower() == name]


async def test_an_xml_api_is_answered_as_json(http: HttpServiceStub) -> None:
    reply = await http.Call(_call(target="erp", path="orders/7"))
    assert reply.status == 200
    assert json.loads(reply.body) == ORDER_JSON
    assert _header(reply, "content-type") == ["application/json"]


async def test_a_call_names_its_own_response_transform(http: HttpServiceStub) -> None:
    raw = await http.Call(_call(target="raw", path="orders/8"))
    assert raw.body.startswith(b"<?xml")
    reply = await http.Call(_call(target="raw", path="orders/8", response_transform="erp-orders"))
    assert json.loads(reply.body)["order"]["@_id"] == "8"


async def test_answers_that_are_not_2xx_come_as_they_are(http: HttpServiceStub) -> None:
    reply = await http.Call(_call(target="erp", path="missing"))
    assert (reply.status, reply.body) == (404, b"<html><p>gone</html>")
    assert _header(reply, "content-type") == ["text/html"]


async def test_an_answer_that_does_not_convert_is_failed_precondition(
    http: HttpServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await http.Call(_call(target="erp", path="broken"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert (info.reason, info.metadata["target"], info.metadata["upstream_status"]) == (
        "TRANSFORM_FAILED",
        "erp",
        "200",
    )


async def test_a_body_failing_the_request_schema_sends_nothing(
    http: HttpServiceStub, xml_upstream: XmlUpstream
) -> None:
    for body in ('{"sku": "a", "quantity": 0}', '{"quantity": 1}', "[1]"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await http.Call(_call(target="erp", method="POST", path="echo", json=body))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(caught.value)
        assert (info.reason, info.metadata["field"]) == ("SCHEMA_VIOLATION", "request.body")
    with pytest.raises(grpc.aio.AioRpcError) as not_json:
        await http.Call(_call(target="erp", method="POST", path="echo", body_bytes=b"<x/>"))
    assert error_info(not_json.value).reason == "TRANSFORM_FAILED"
    assert xml_upstream.requests == 0


async def test_a_body_that_passes_is_sent_unchanged(
    http: HttpServiceStub, xml_upstream: XmlUpstream
) -> None:
    body = '{"sku": "a",  "quantity": 3}'
    reply = await http.Call(
        _call(
            target="raw",
            method="POST",
            path="echo",
            json=body,
            request_transform="validate:new-order",
        )
    )
    assert reply.status == 200
    assert xml_upstream.bodies == [body.encode()]
    assert _header(reply, "content-type") == ["application/json"]


async def test_a_request_body_converted_from_xml_goes_with_its_new_content_type(
    http: HttpServiceStub, xml_upstream: XmlUpstream
) -> None:
    reply = await http.Call(
        _call(
            target="raw",
            method="PUT",
            path="echo",
            body_bytes=b'<line sku="a">2</line>',
            headers=[http_pb2.HttpHeader(name="Content-Type", value="text/xml")],
            request_transform="xml_to_json",
        )
    )
    assert json.loads(xml_upstream.bodies[0]) == {"line": {"@_sku": "a", "#text": "2"}}
    assert _header(reply, "content-type") == ["application/json"]


async def test_a_request_without_a_body_skips_the_request_transform(
    http: HttpServiceStub, xml_upstream: XmlUpstream
) -> None:
    reply = await http.Call(_call(target="erp", path="orders/9"))
    assert reply.status == 200 and xml_upstream.requests == 1


async def test_call_stream_refuses_what_it_cannot_apply(
    http: HttpServiceStub, xml_upstream: XmlUpstream
) -> None:
    async def first(head: http_pb2.HttpStreamHead) -> grpc.aio.AioRpcError:
        call = http.CallStream(iter([http_pb2.HttpServiceCallStreamRequest(head=head)]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        return caught.value

    cases = [
        http_pb2.HttpStreamHead(
            request=http_pb2.HttpRequest(
                target="raw", path="orders/1", response_transform="xml_to_json"
            )
        ),
        http_pb2.HttpStreamHead(
            request=http_pb2.HttpRequest(target="erp", method="POST", path="echo"),
            stream_body=True,
        ),
        http_pb2.HttpStreamHead(
            request=http_pb2.HttpRequest(target="erp", method="POST", path="echo", json='{"a": 1}')
        ),
    ]
    reasons = []
    for head in cases:
        error = await first(head)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        reasons.append(error_info(error).reason)
    assert reasons == ["INVALID_REQUEST", "INVALID_REQUEST", "SCHEMA_VIOLATION"]
    assert xml_upstream.requests == 0
