"""HttpService.CallStream against a real local upstream: chunks, Server-Sent Events as
separate messages, a streamed-in request body, a 5xx answer, cancellation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable

import grpc
import pytest
from api.helpers import NO_RETRIES, api_config, http_service, request
from api.upstream import Upstream
from support import error_info, eventually

from generated.integration.v1 import http_pb2


def head(
    method: str = "GET",
    path: str = "echo",
    *,
    query: Iterable[tuple[str, str]] = (),
    parse_sse: bool = False,
    stream_body: bool = False,
    body: bytes | None = None,
) -> http_pb2.HttpServiceCallStreamRequest:
    request = http_pb2.HttpRequest(
        method=method,
        path=path,
        query=[http_pb2.HttpQueryParameter(name=k, value=v) for k, v in query],
    )
    if body is not None:
        request.body_bytes = body
    return http_pb2.HttpServiceCallStreamRequest(
        head=http_pb2.HttpStreamHead(request=request, parse_sse=parse_sse, stream_body=stream_body)
    )


async def messages(
    call: AsyncIterator[http_pb2.HttpServiceCallStreamResponse],
) -> list[http_pb2.HttpServiceCallStreamResponse]:
    return [message async for message in call]


async def test_the_answer_streams_as_head_then_chunks(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url)) as stub:
        got = await messages(
            stub.CallStream(iter([head("GET", "big", query=[("size", "200000")])]))
        )
    assert got[0].WhichOneof("part") == "head" and got[0].head.status == 200
    chunks = [m.chunk for m in got[1:]]
    assert all(m.WhichOneof("part") == "chunk" for m in got[1:])
    assert sum(len(c) for c in chunks) == 200000
    assert max(len(c) for c in chunks) <= 64 * 1024


async def test_server_sent_events_arrive_as_separate_messages(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url)) as stub:
        got = await messages(
            stub.CallStream(iter([head("GET", "sse", query=[("n", "5")], parse_sse=True)]))
        )
    assert got[0].head.status == 200
    events = [(m.event.event, m.event.data) for m in got[1:]]
    assert events == [("tick", str(i)) for i in range(5)]


async def test_an_event_stream_without_parse_sse_is_raw_chunks(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url)) as stub:
        got = await messages(stub.CallStream(iter([head("GET", "sse", query=[("n", "2")])])))
    assert b"".join(m.chunk for m in got[1:]) == b"event: tick\ndata: 0\n\nevent: tick\ndata: 1\n\n"


async def test_a_request_body_streams_in(upstream: Upstream) -> None:
    parts = [b"a" * 100_000, b"b" * 100_000, b"c"]
    requests = [
        head("POST", "echo/upload", stream_body=True, body=b"start-"),
        *(http_pb2.HttpServiceCallStreamRequest(body_chunk=part) for part in parts),
    ]
    async with http_service(api_config(upstream.url)) as stub:
        got = await messages(stub.CallStream(iter(requests)))
    seen = json.loads(b"".join(m.chunk for m in got[1:]))
    assert seen["method"] == "POST"
    assert seen["body"] == "start-" + "a" * 100_000 + "b" * 100_000 + "c"


async def test_a_5xx_answer_streams_as_data_after_retries(upstream: Upstream) -> None:
    upstream.script("down", [(503, {"Retry-After": "0"})])
    async with http_service(api_config(upstream.url)) as stub:
        got = await messages(stub.CallStream(iter([head("GET", "script/down")])))
    assert got[0].head.status == 503
    assert b"".join(m.chunk for m in got[1:]) == b"answer 503"
    assert upstream.hits("down") == 4  # the first attempt and 3 retries


async def test_a_streamed_body_is_never_retried(upstream: Upstream) -> None:
    upstream.script("once", [(503, {"Retry-After": "0"}), (200, {})])
    requests = [
        head("PUT", "script/once", stream_body=True),
        http_pb2.HttpServiceCallStreamRequest(body_chunk=b"x"),
    ]
    async with http_service(api_config(upstream.url)) as stub:
        got = await messages(stub.CallStream(iter(requests)))
    assert got[0].head.status == 503
    assert upstream.hits("once") == 1


async def test_the_first_message_must_be_a_head(upstream: Upstream) -> None:
    first = http_pb2.HttpServiceCallStreamRequest(body_chunk=b"x")
    async with http_service(api_config(upstream.url, retries=NO_RETRIES)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await messages(stub.CallStream(iter([first])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream.requests == 0


async def test_cancelling_the_call_closes_the_upstream_download(upstream: Upstream) -> None:
    size = str(1024 * 1024 * 1024)
    async with http_service(api_config(upstream.url)) as stub:
        call = stub.CallStream(iter([head("GET", "big", query=[("size", size)])]))
        received = 0
        async for message in call:
            received += len(message.chunk)
            if received > 1024 * 1024:
                call.cancel()
                break
        await eventually(lambda: upstream.server.aborted_downloads == 1)
    assert upstream.server.aborted_downloads == 1  # the upstream saw its download cut
    assert received < 64 * 1024 * 1024


async def test_a_second_head_in_a_streamed_body_is_invalid_argument(upstream: Upstream) -> None:
    requests = [head("POST", "echo", stream_body=True), head("POST", "echo")]
    async with http_service(api_config(upstream.url)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await messages(stub.CallStream(iter(requests)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_body_that_breaks_off_is_stream_interrupted(upstream: Upstream) -> None:
    received: list[http_pb2.HttpServiceCallStreamResponse] = []
    async with http_service(api_config(upstream.url)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for message in stub.CallStream(iter([head("GET", "cut")])):
                received.append(message)
    assert received[0].head.status == 200
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "STREAM_INTERRUPTED"


async def test_a_call_whose_body_breaks_off_is_unavailable(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url, retries=NO_RETRIES)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "cut"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
