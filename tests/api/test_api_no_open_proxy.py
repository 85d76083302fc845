"""No open proxy, through the real sidecar: every refused request is INVALID_ARGUMENT and
sends nothing (the upstream counts every request it receives), and a redirect off the
upstream is not followed."""

from __future__ import annotations

import json

import grpc
import pytest
from api.helpers import NO_RETRIES, api_config, http_service, request
from api.upstream import Upstream
from support import error_info

from generated.integration.v1 import http_pb2

REFUSED = {
    "absolute url": request(path="http://evil.example/x"),
    "scheme": request(path="https:evil.example"),
    "network path": request(path="//evil.example/x"),
    "dot dot": request(path="echo/../../admin"),
    "leading dot dot": request(path="../admin"),
    "single dot": request(path="./echo"),
    "encoded dots": request(path="echo/%2e%2e/admin"),
    "mixed encoded dots": request(path="echo/.%2E/admin"),
    "double encoded dots": request(path="echo/%252e%252e/admin"),
    "encoded slash escape": request(path="echo/..%2fadmin"),
    "backslash": request(path="echo\\..\\admin"),
    "query in path": request(path="echo?x=1"),
    "fragment": request(path="echo#x"),
    "control character": request(path="echo/\x00"),
    "bad escape": request(path="echo/%zz"),
    "header crlf": request(headers={"X-A": "v\r\nX-Injected: 1"}),
    "header lf": request(headers={"X-A": "v\nX-Injected: 1"}),
    "header name": request(headers={"X A": "v"}),
    "authorization": request(headers={"Authorization": "Bearer mine"}),
    "host": request(headers={"Host": "evil.example"}),
    "connection": request(headers={"Connection": "close"}),
    "transfer-encoding": request(headers={"Transfer-Encoding": "chunked"}),
    "upgrade": request(headers={"Upgrade": "websocket"}),
    "proxy header": request(headers={"Proxy-Authorization": "Basic x"}),
    "content-length": request(headers={"Content-Length": "5"}),
    "method": request(method="CONNECT"),
    "trace method": request(method="TRACE"),
    "not json": request("POST", json="{nope"),
    "too many headers": request(headers={f"X-{i}": "v" for i in range(101)}),
    "long path": request(path="a" * 9000),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_refused_request_is_invalid_argument_and_sends_nothing(
    upstream: Upstream, case: str
) -> None:
    async with http_service(api_config(upstream.url)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(REFUSED[case])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason in ("INVALID_REQUEST", "VALUE_TOO_LARGE")
    assert upstream.requests == 0


async def test_a_refused_stream_request_sends_nothing(upstream: Upstream) -> None:
    head = http_pb2.HttpStreamHead(request=http_pb2.HttpRequest(path="../x"))
    async with http_service(api_config(upstream.url)) as stub:
        call = stub.CallStream(iter([http_pb2.HttpServiceCallStreamRequest(head=head)]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream.requests == 0


async def test_a_request_body_past_max_request_bytes_is_refused(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url, "    max_request_bytes: 1KiB")) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("POST", body=b"x" * 1025))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "VALUE_TOO_LARGE"
    assert upstream.requests == 0


async def test_refused_requests_never_open_the_breaker(upstream: Upstream) -> None:
    config = api_config(
        upstream.url, "    circuit_breaker: {failure_threshold: 1}", retries=NO_RETRIES
    )
    async with http_service(config) as stub:
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Call(request(path="../x"))
        answer = await stub.Call(request())
    assert answer.status == 200


async def test_a_redirect_is_not_followed_unless_configured(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url)) as stub:
        answer = await stub.Call(request("GET", "redirect", query=[("to", "/echo/there")]))
    assert answer.status == 302
    assert upstream.requests == 1


async def test_a_redirect_within_the_upstream_is_followed_when_configured(
    upstream: Upstream,
) -> None:
    async with http_service(api_config(upstream.url, "    follow_redirects: true")) as stub:
        answer = await stub.Call(request("GET", "redirect", query=[("to", "/echo/there?p=2")]))
    assert answer.status == 200
    seen = json.loads(answer.body)
    assert (seen["path"], seen["query"]) == ("/echo/there", "p=2")


async def test_a_redirect_to_another_host_is_not_followed(upstream: Upstream) -> None:
    other = Upstream().start()
    try:
        config = api_config(upstream.url, "    follow_redirects: true")
        async with http_service(config) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Call(
                    request("GET", "redirect", query=[("to", other.url + "/echo/stolen")])
                )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert other.requests == 0
    finally:
        other.stop()


async def test_a_redirect_out_of_the_base_path_is_not_followed(upstream: Upstream) -> None:
    config = api_config(upstream.url + "/redirect", "    follow_redirects: true")
    async with http_service(config) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "", query=[("to", "/echo/outside")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream.requests == 1
