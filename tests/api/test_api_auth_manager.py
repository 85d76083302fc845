"""AuthenticationManager: the OAuth2 token cache on the FakeClock (single flight, refresh
ahead of expiry, one refresh after a 401), the static kinds, and the token request against
a real local token endpoint."""

from __future__ import annotations

import asyncio

import pytest
from api.upstream import Upstream
from pydantic import SecretStr

from sidecar.backends.api.auth import AuthenticationManager, TokenGrant
from sidecar.config.services.api import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    NoAuth,
    OAuth2ClientCredentials,
)
from sidecar.errors import FailedPrecondition, Unavailable
from sidecar.testing import FakeClock


def oauth(
    token_url: str = "http://127.0.0.1:9/token", **options: object
) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials.model_validate(
        {
            "type": "oauth2_client_credentials",
            "token_url": token_url,
            "client_id": "client",
            "client_secret": "secret",
            **options,
        }
    )


class TokenServer:
    """A fetcher handing out tok-1, tok-2 ...; `gate` holds each request until set."""

    def __init__(self, expires_in: float | None = 100.0) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self) -> TokenGrant:
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise Unavailable("token server down", reason="UPSTREAM_UNAVAILABLE")
        return TokenGrant(f"tok-{self.calls}", self.expires_in)


def manager(server: TokenServer, clock: FakeClock, **options: object) -> AuthenticationManager:
    return AuthenticationManager("up", oauth(**options), clock=clock, fetch=server)


async def test_concurrent_calls_share_one_token_request() -> None:
    server, clock = TokenServer(), FakeClock()
    auth = manager(server, clock)
    server.gate.clear()
    waiting = [asyncio.create_task(auth.credentials()) for _ in range(100)]
    await asyncio.sleep(0)
    server.gate.set()
    tokens = {c.token for c in await asyncio.gather(*waiting)}
    assert tokens == {"tok-1"}
    assert server.calls == 1


async def test_the_token_is_reused_until_refresh_time() -> None:
    server, clock = TokenServer(expires_in=100), FakeClock()
    auth = manager(server, clock, refresh_before="30s")
    await auth.credentials()
    await clock.advance(69)
    assert (await auth.credentials()).headers == (("Authorization", "Bearer tok-1"),)
    assert server.calls == 1


async def test_refresh_ahead_of_expiry_runs_in_the_background() -> None:
    server, clock = TokenServer(expires_in=100), FakeClock()
    auth = manager(server, clock, refresh_before="30s")
    await auth.credentials()
    await clock.advance(70)  # refresh time: 100 - 30
    server.gate.clear()
    current = await auth.credentials()  # does not wait for the new token
    assert current.token == "tok-1"
    await asyncio.sleep(0)
    assert server.calls == 2
    server.gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert (await auth.credentials()).token == "tok-2"
    assert server.calls == 2


async def test_refresh_ahead_is_at_most_half_the_lifetime() -> None:
    server, clock = TokenServer(expires_in=10), FakeClock()
    auth = manager(server, clock, refresh_before="60s")
    await auth.credentials()
    await clock.advance(4)
    await auth.credentials()
    assert server.calls == 1
    await clock.advance(1)
    await auth.credentials()
    await asyncio.sleep(0)
    assert server.calls == 2


async def test_an_expired_token_is_waited_for() -> None:
    server, clock = TokenServer(expires_in=100), FakeClock()
    auth = manager(server, clock)
    await auth.credentials()
    await clock.advance(100)
    assert (await auth.credentials()).token == "tok-2"


async def test_a_token_without_expires_in_lives_default_expires_in() -> None:
    server, clock = TokenServer(expires_in=None), FakeClock()
    auth = manager(server, clock, default_expires_in="10m", refresh_before="1m")
    await auth.credentials()
    await clock.advance(539)
    await auth.credentials()
    assert server.calls == 1
    await clock.advance(1)
    await auth.credentials()
    await asyncio.sleep(0)
    assert server.calls == 2


async def test_a_401_refreshes_once_for_every_call_that_used_the_token() -> None:
    server, clock = TokenServer(), FakeClock()
    auth = manager(server, clock)
    used = await auth.credentials()
    fresh = await asyncio.gather(*(auth.after_unauthorized(used) for _ in range(10)))
    assert {c.token for c in fresh if c is not None} == {"tok-2"}
    assert server.calls == 2
    again = await auth.after_unauthorized(used)  # the refused token is already replaced
    assert again is not None and again.token == "tok-2"
    assert server.calls == 2


async def test_a_failed_background_refresh_keeps_the_token_and_holds_off() -> None:
    server, clock = TokenServer(expires_in=100), FakeClock()
    auth = manager(server, clock, refresh_before="30s")
    await auth.credentials()
    await clock.advance(70)
    server.fail = True
    assert (await auth.credentials()).token == "tok-1"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert (await auth.credentials()).token == "tok-1"
    assert server.calls == 2  # no new request within the hold-off
    await clock.advance(5)
    server.fail = False
    await auth.credentials()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert (await auth.credentials()).token == "tok-3"


async def test_a_failing_token_request_fails_the_waiting_calls() -> None:
    server, clock = TokenServer(), FakeClock()
    server.fail = True
    auth = manager(server, clock)
    with pytest.raises(Unavailable):
        await auth.credentials()


@pytest.mark.parametrize(
    ("settings", "headers", "query"),
    [
        (NoAuth(type="none"), (), ()),
        (BearerAuth(type="bearer", token=SecretStr("t")), (("Authorization", "Bearer t"),), ()),
        (
            BasicAuth(type="basic", username="u", password=SecretStr("p")),
            (("Authorization", "Basic dTpw"),),
            (),
        ),
        (ApiKeyAuth(type="api_key", key=SecretStr("k")), (("X-API-Key", "k"),), ()),
        (
            ApiKeyAuth(type="api_key", key=SecretStr("k"), query_parameter="key"),
            (),
            (("key", "k"),),
        ),
    ],
)
async def test_static_credentials_and_no_retry_after_401(
    settings: object, headers: tuple[tuple[str, str], ...], query: tuple[tuple[str, str], ...]
) -> None:
    auth = AuthenticationManager("up", settings, clock=FakeClock())  # type: ignore[arg-type]
    credentials = await auth.credentials()
    assert (credentials.headers, credentials.query) == (headers, query)
    assert await auth.after_unauthorized(credentials) is None


async def test_the_token_request_against_a_real_endpoint(upstream: Upstream) -> None:
    auth = AuthenticationManager(
        "up", oauth(upstream.url + "/token", scope="a b"), clock=FakeClock()
    )
    try:
        credentials = await auth.credentials()
    finally:
        await auth.close()
    assert credentials.token == "tok-1"
    assert upstream.server.scopes == ["a b"]


async def test_refused_client_credentials_are_failed_precondition(upstream: Upstream) -> None:
    settings = oauth(upstream.url + "/token", client_secret="wrong")
    auth = AuthenticationManager("up", settings, clock=FakeClock())
    try:
        with pytest.raises(FailedPrecondition) as caught:
            await auth.credentials()
    finally:
        await auth.close()
    assert caught.value.reason == "UPSTREAM_AUTH_FAILED"
    assert "wrong" not in str(caught.value)
