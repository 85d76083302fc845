"""Transport settings of an api service through the real sidecar: TLS from the connection
(CA bundle, client certificate), read and total timeouts, and 429 kept out of the breaker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from api.h2_upstream import H2Upstream
from api.helpers import NO_RETRIES, api_config, http_service, request
from api.upstream import Upstream
from http_server import HttpServer, server_context
from support import error_info


@pytest.fixture(scope="module")
def tls_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("api-tls")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("sidecar-client")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    return folder


@pytest.fixture
def mtls_server(tls_folder: Path) -> Iterator[HttpServer]:
    context = server_context(
        str(tls_folder / "server.pem"),
        str(tls_folder / "server.key"),
        client_ca=str(tls_folder / "ca.pem"),
    )
    server = HttpServer(context).start()
    yield server
    server.stop()


async def test_mutual_tls_from_the_service_settings(
    mtls_server: HttpServer, tls_folder: Path
) -> None:
    tls = (
        f"    tls: {{ca_file: '{tls_folder / 'ca.pem'}', cert_file: '{tls_folder / 'client.pem'}', "
        f"key_file: '{tls_folder / 'client.key'}'}}"
    )
    config = api_config(f"https://localhost:{mtls_server.port}", tls, retries=NO_RETRIES)
    async with http_service(config) as stub:
        answer = await stub.Call(request("GET", "headers"))
    assert answer.status == 200
    assert "x-request-id" in json.loads(answer.body)


async def test_without_the_client_certificate_the_upstream_is_unavailable(
    mtls_server: HttpServer, tls_folder: Path
) -> None:
    tls = f"    tls: {{ca_file: '{tls_folder / 'ca.pem'}'}}"
    config = api_config(f"https://localhost:{mtls_server.port}", tls, retries=NO_RETRIES)
    async with http_service(config) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "headers"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_an_untrusted_certificate_is_refused(mtls_server: HttpServer) -> None:
    config = api_config(f"https://localhost:{mtls_server.port}", retries=NO_RETRIES)
    async with http_service(config) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "headers"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_read_timeout_is_deadline_exceeded(upstream: Upstream) -> None:
    config = api_config(upstream.url, "    timeouts: {read: 200ms}", retries=NO_RETRIES)
    async with http_service(config) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "slow", query=[("seconds", "2")]))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_the_request_timeout_bounds_the_whole_attempt(upstream: Upstream) -> None:
    config = api_config(upstream.url, "    timeouts: {request: 300ms}", retries=NO_RETRIES)
    async with http_service(config) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "slow", query=[("seconds", "2")]))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_the_callers_deadline_bounds_the_call(upstream: Upstream) -> None:
    async with http_service(api_config(upstream.url, retries=NO_RETRIES)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "slow", query=[("seconds", "2")]), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_429_answers_do_not_open_the_breaker(upstream: Upstream) -> None:
    config = api_config(
        upstream.url, "    circuit_breaker: {failure_threshold: 1}", retries=NO_RETRIES
    )
    async with http_service(config) as stub:
        for _ in range(3):
            assert (await stub.Call(request("GET", "status/429"))).status == 429
        answer = await stub.Call(request())
    assert answer.status == 200


async def test_a_429_waits_at_most_max_retries_times(upstream: Upstream) -> None:
    upstream.script("busy", [(429, {"Retry-After": "0"})])
    async with http_service(api_config(upstream.url)) as stub:
        answer = await stub.Call(request("GET", "script/busy"))
    assert answer.status == 429
    assert upstream.hits("busy") == 4  # the first send and 3 resends


async def test_an_unreachable_token_endpoint_is_unavailable(upstream: Upstream) -> None:
    config = api_config(
        upstream.url,
        "    auth: {type: oauth2_client_credentials, token_url: 'http://127.0.0.1:9/token',\n"
        "           client_id: c, client_secret: s}",
        retries=NO_RETRIES,
    )
    async with http_service(config) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "UPSTREAM_UNAVAILABLE"
    assert upstream.requests == 0


async def test_http2_is_offered_and_http11_used_where_the_upstream_lacks_it(
    mtls_server: HttpServer, tls_folder: Path
) -> None:
    tls = (
        f"    http2: true\n    tls: {{ca_file: '{tls_folder / 'ca.pem'}', "
        f"cert_file: '{tls_folder / 'client.pem'}', key_file: '{tls_folder / 'client.key'}'}}"
    )
    config = api_config(f"https://localhost:{mtls_server.port}", tls, retries=NO_RETRIES)
    async with http_service(config) as stub:
        answer = await stub.Call(request("GET", "headers"))
    assert (answer.status, answer.http_version) == (200, "HTTP/1.1")


async def test_http2_is_used_where_the_upstream_offers_it(tls_folder: Path) -> None:
    context = server_context(str(tls_folder / "server.pem"), str(tls_folder / "server.key"))
    upstream = await H2Upstream(context).start()
    tls = f"    http2: true\n    tls: {{ca_file: '{tls_folder / 'ca.pem'}'}}"
    config = api_config(f"https://localhost:{upstream.port}/v1", tls, retries=NO_RETRIES)
    try:
        async with http_service(config) as stub:
            answer = await stub.Call(request("GET", "items", query=[("a", "1")]))
    finally:
        await upstream.close()
    assert (answer.status, answer.http_version) == (200, "HTTP/2")
    assert json.loads(answer.body) == {"protocol": "h2", "method": "GET", "path": "/v1/items?a=1"}
