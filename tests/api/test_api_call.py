"""HttpService.Call against a real local upstream: methods, bodies, headers, identity,
statuses as data, retries and their limits."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from api.helpers import NO_RETRIES, api_config, header, http_service, request
from api.upstream import Upstream
from support import error_info


async def test_get_post_put_delete_with_json_and_bytes(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url)) as stub:
        got = await stub.Call(request("GET", "echo/items", query=[("page", "2"), ("page", "3")]))
        posted = await stub.Call(request("POST", "/echo/items", json='{"name": "a", "n": 1}'))
        put = await stub.Call(request("PUT", "echo/items/1", body=b"\x00\x01raw"))
        deleted = await stub.Call(request("DELETE", "echo/items/1"))
    assert [r.status for r in (got, posted, put, deleted)] == [200, 200, 200, 200]
    seen = [json.loads(r.body) for r in (got, posted, put, deleted)]
    assert [s["method"] for s in seen] == ["GET", "POST", "PUT", "DELETE"]
    assert seen[0]["path"] == "/echo/items" and seen[0]["query"] == "page=2&page=3"
    assert json.loads(seen[1]["body"]) == {"name": "a", "n": 1}
    assert seen[1]["headers"]["content-type"] == "application/json"
    assert seen[2]["body"] == "\x00\x01raw"
    assert header(got, "content-type") == "application/json"
    assert got.http_version == "HTTP/1.1"


async def test_base_path_default_headers_query_and_auth_are_added(upstream: Upstream) -> None:
    config = api_config(
        upstream.url + "/echo/v2",
        "    headers: {X-Team: search}\n"
        "    query: {api-version: '7'}\n"
        "    auth: {type: api_key, key: k-1, header: X-Api-Key}",
    )
    async with http_service(config) as stub:
        answer = await stub.Call(request("GET", "users", headers={"X-Caller": "c"}))
    seen = json.loads(answer.body)
    assert seen["path"] == "/echo/v2/users"
    assert seen["query"] == "api-version=7"
    assert seen["headers"]["x-team"] == "search"
    assert seen["headers"]["x-caller"] == "c"
    assert seen["headers"]["x-api-key"] == "k-1"


@pytest.mark.parametrize(
    ("auth", "where", "expected"),
    [
        ("{type: bearer, token: t-1}", "authorization", "Bearer t-1"),
        ("{type: basic, username: u, password: p}", "authorization", "Basic dTpw"),
        ("{type: api_key, key: k-2, query_parameter: key}", "query", "key=k-2"),
    ],
)
async def test_static_credentials(upstream: Upstream, auth: str, where: str, expected: str) -> None:
    async with http_service(api_config(upstream.url, f"    auth: {auth}")) as stub:
        seen = json.loads((await stub.Call(request())).body)
    value = seen["query"] if where == "query" else seen["headers"].get(where)
    assert value == expected


async def test_the_upstream_sees_request_id_and_traceparent(upstream: Upstream) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with http_service(api_config(upstream.url)) as stub:
        given = await stub.Call(
            request(), metadata=(("x-request-id", "req-42"), ("traceparent", traceparent))
        )
        generated = await stub.Call(request())
    seen = json.loads(given.body)["headers"]
    assert seen["x-request-id"] == "req-42"
    assert seen["traceparent"] == traceparent
    fresh = json.loads(generated.body)["headers"]
    assert fresh["x-request-id"]  # the id the sidecar generated for the call
    assert fresh["traceparent"].startswith("00-") and len(fresh["traceparent"]) == 55


async def test_an_upstream_status_is_data_not_an_error(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url, retries=NO_RETRIES)) as stub:
        missing = await stub.Call(request("GET", "status/404"))
        failed = await stub.Call(request("GET", "status/500"))
        teapot = await stub.Call(request("POST", "status/418"))
    assert (missing.status, failed.status, teapot.status) == (404, 500, 418)
    assert failed.body == b'{"message": "as asked"}'


async def test_503_with_retry_after_then_success(upstream: Upstream) -> None:
    upstream.script("flaky", [(503, {"Retry-After": "0.05"}), (200, {})])
    async with http_service(api_config(upstream.url)) as stub:
        answer = await stub.Call(request("GET", "script/flaky"), timeout=10)
    assert answer.status == 200
    assert upstream.hits("flaky") == 2


async def test_429_with_retry_after_then_success(upstream: Upstream) -> None:
    upstream.script("limited", [(429, {"Retry-After": "0.05"}), (200, {})])
    async with http_service(api_config(upstream.url)) as stub:
        answer = await stub.Call(request("GET", "script/limited"), timeout=10)
    assert answer.status == 200
    assert upstream.hits("limited") == 2


async def test_a_retry_after_longer_than_the_deadline_answers_at_once(upstream: Upstream) -> None:
    upstream.script("slow", [(503, {"Retry-After": "3"}), (200, {})])
    async with http_service(api_config(upstream.url)) as stub:
        started = asyncio.get_running_loop().time()
        answer = await stub.Call(request("GET", "script/slow"), timeout=1.0)
        took = asyncio.get_running_loop().time() - started
    assert answer.status == 503  # not a blind wait past the caller's deadline
    assert upstream.hits("slow") == 1
    assert took < 0.9


async def test_a_post_without_idempotency_key_is_not_retried(upstream: Upstream) -> None:
    upstream.script("post", [(503, {"Retry-After": "0"}), (200, {})])
    async with http_service(api_config(upstream.url)) as stub:
        answer = await stub.Call(request("POST", "script/post", body=b"x"))
    assert answer.status == 503
    assert upstream.hits("post") == 1


async def test_a_post_with_idempotency_key_is_retried(upstream: Upstream) -> None:
    upstream.script("keyed", [(503, {"Retry-After": "0"}), (200, {})])
    async with http_service(api_config(upstream.url)) as stub:
        answer = await stub.Call(
            request("POST", "script/keyed", body=b"x", headers={"Idempotency-Key": "k-1"})
        )
    assert answer.status == 200
    assert upstream.hits("keyed") == 2


async def test_5xx_opens_the_breaker_4xx_does_not(upstream: Upstream) -> None:
    config = api_config(
        upstream.url,
        "    circuit_breaker: {failure_threshold: 2, reset_timeout: 60s}",
        retries=NO_RETRIES,
    )
    async with http_service(config) as stub:
        for _ in range(5):
            assert (await stub.Call(request("GET", "status/404"))).status == 404
        for _ in range(2):
            assert (await stub.Call(request("GET", "status/502"))).status == 502
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "echo"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "CIRCUIT_OPEN"


async def test_an_unreachable_upstream_is_unavailable() -> None:
    config = api_config("http://127.0.0.1:9", retries=NO_RETRIES)
    async with http_service(config) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "UPSTREAM_UNAVAILABLE"


async def test_a_body_past_max_response_bytes_is_resource_exhausted(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url, "    max_response_bytes: 1KiB")) as stub:
        small = await stub.Call(request("GET", "big", query=[("size", "1024")]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "big", query=[("size", "1025")]))
    assert len(small.body) == 1024
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "RESULT_TOO_LARGE"


async def test_a_gzip_body_is_decoded(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url)) as stub:
        answer = await stub.Call(request("GET", "gzip"))
    assert json.loads(answer.body) == {"zipped": True}
    assert header(answer, "content-encoding") is None


async def test_an_unknown_target_is_not_found(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request(target="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_idempotency_key_in_metadata_is_sent_and_allows_retries(
    upstream: Upstream,
) -> None:
    upstream.script("meta", [(503, {"Retry-After": "0"}), (200, {})])
    async with http_service(api_config(upstream.url)) as stub:
        answer = await stub.Call(
            request("POST", "script/meta", body=b"x"), metadata=(("idempotency-key", "k-9"),)
        )
    assert answer.status == 200
    assert upstream.hits("meta") == 2
    assert [log[2].get("Idempotency-Key") for log in upstream.server.log] == ["k-9", "k-9"]
