"""OAuth2 client credentials through the real sidecar and a real token endpoint: one token
request for 100 concurrent calls, refresh before expiry (FakeClock), and exactly one
refresh-and-retry after a 401."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from api.helpers import api_config, http_service, request
from api.upstream import Upstream
from support import error_info, eventually

from sidecar.testing import FakeClock


def oauth_config(upstream: Upstream, refresh_before: str = "60s") -> str:
    return api_config(
        upstream.url,
        "    auth:\n"
        "      type: oauth2_client_credentials\n"
        f"      token_url: {upstream.url}/token\n"
        "      client_id: client\n"
        "      client_secret: ${API_TEST_SECRET:-secret}\n"
        f"      refresh_before: {refresh_before}",
    )


async def test_one_token_request_serves_100_concurrent_calls(upstream: Upstream) -> None:
    upstream.server.token_delay = 0.2  # every call arrives while the token is on its way
    async with http_service(oauth_config(upstream)) as stub:
        answers = await asyncio.gather(
            *(stub.Call(request("GET", "protected"), timeout=30) for _ in range(100))
        )
    assert [a.status for a in answers] == [200] * 100
    assert upstream.server.token_requests == 1


async def test_the_token_is_refreshed_before_it_expires(upstream: Upstream) -> None:
    upstream.server.expires_in = 100
    clock = FakeClock()
    async with http_service(oauth_config(upstream, "30s"), clock=clock) as stub:
        assert (await stub.Call(request("GET", "protected"))).status == 200
        await clock.advance(69)
        assert (await stub.Call(request("GET", "protected"))).status == 200
        assert upstream.server.token_requests == 1
        await clock.advance(1)  # 30 s before the expiry
        assert (await stub.Call(request("GET", "protected"))).status == 200
        await eventually(lambda: upstream.server.token_requests == 2)
        # The upstream counts the token request before it answers: calls still carry tok-1
        # (valid for 30 s more) until the answer is in, then tok-2.
        for _ in range(100):
            answer = await stub.Call(request("GET", "echo"))
            if b"Bearer tok-2" in answer.body:
                break
            await asyncio.sleep(0.02)
        assert upstream.server.token_requests == 2
    assert b"Bearer tok-2" in answer.body


async def test_a_401_triggers_exactly_one_refresh_and_retry(upstream: Upstream) -> None:
    async with http_service(oauth_config(upstream)) as stub:
        assert (await stub.Call(request("GET", "protected"))).status == 200
        upstream.server.valid_tokens.clear()  # the upstream revokes tok-1
        before = upstream.requests
        answer = await stub.Call(request("GET", "protected"))
    assert answer.status == 200
    assert upstream.server.token_requests == 2
    assert upstream.requests - before == 3  # 401, the token request, the retry


async def test_a_second_401_is_the_answer(upstream: Upstream) -> None:
    async with http_service(oauth_config(upstream)) as stub:
        await stub.Call(request("GET", "protected"))
        upstream.server.accept_tokens = False
        answer = await stub.Call(request("POST", "protected", body=b"x"))
    assert answer.status == 401
    assert upstream.server.token_requests == 2  # one refresh, no loop


async def test_token_endpoint_refusal_is_failed_precondition(upstream: Upstream) -> None:
    config = oauth_config(upstream).replace("${API_TEST_SECRET:-secret}", "wrong")
    async with http_service(config) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(request("GET", "protected"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "UPSTREAM_AUTH_FAILED"
