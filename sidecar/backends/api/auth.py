"""`AuthenticationManager`: the credentials of one api service (the specification's
AuthenticationManager), added to every request it sends.

Static kinds (bearer, basic, API key in a header or a query parameter) are computed once.
OAuth2 client credentials keep one cached token:

- **Single flight.** However many calls find no valid token, one token request is made and
  every one of them waits for it (100 concurrent calls, one request to the token server).
- **Refresh ahead.** From `refresh_before` ahead of the expiry (at most half the token's
  lifetime) the first call starts a refresh in the background and goes on with the current
  token; calls wait only when the token has really expired. A failed background refresh is
  retried no sooner than `_RETRY_REFRESH` later, while the old token stays in use.
- **401.** `after_unauthorized(used)` refreshes once when the upstream refused the token a
  call used, unless another call already replaced it; the caller retries once with what it
  returns, and a second 401 is the answer.

Time comes from the injected clock, so the tests move it with the FakeClock.

    manager = AuthenticationManager("billing", settings.auth, clock=clock)
    credentials = await manager.credentials()
    ... send with credentials.headers / credentials.query ...
    if status == 401:
        retry_with = await manager.after_unauthorized(credentials)   # None: no retry
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sidecar.config.services.api import (
    ApiAuthConfig,
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    OAuth2ClientCredentials,
)
from sidecar.errors import FailedPrecondition, SidecarError, Unavailable
from sidecar.resilience import Clock

if TYPE_CHECKING:
    import httpx2

__all__ = ["AuthenticationManager", "Credentials", "TokenFetcher", "TokenGrant"]

_log = logging.getLogger("sidecar.backends.api.auth")

_RETRY_REFRESH: Final = 5.0
"""Seconds between background refresh attempts while the token server fails."""
_MAX_TOKEN_RESPONSE: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one request carries; `token` identifies an OAuth2 token (None otherwise)."""

    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    token: str | None = None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token endpoint's answer."""

    access_token: str
    expires_in: float | None


TokenFetcher = Callable[[], Awaitable[TokenGrant]]
"""Makes one token request."""


@dataclass(frozen=True, slots=True)
class _Token:
    credentials: Credentials
    expires_at: float
    refresh_at: float


def _static(auth: ApiAuthConfig) -> Credentials:
    if isinstance(auth, BearerAuth):
        return Credentials(headers=(("Authorization", f"Bearer {auth.token.get_secret_value()}"),))
    if isinstance(auth, BasicAuth):
        pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        return Credentials(headers=(("Authorization", f"Basic {base64.b64encode(pair).decode()}"),))
    if isinstance(auth, ApiKeyAuth):
        key = auth.key.get_secret_value()
        header = auth.header_name
        if header is not None:
            return Credentials(headers=((header, key),))
        assert auth.query_parameter is not None
        return Credentials(query=((auth.query_parameter, key),))
    return Credentials()


class AuthenticationManager:
    """The credentials of one service.

    Args:
        name: The service's name (errors carry it as `target`).
        auth: Its `auth` settings.
        clock: Expiry and refresh times are on this clock.
        fetch: Makes one token request (OAuth2 only); default: `HttpTokenFetcher`.
    """

    def __init__(
        self,
        name: str,
        auth: ApiAuthConfig,
        *,
        clock: Clock,
        fetch: TokenFetcher | None = None,
    ) -> None:
        self._name = name
        self._clock = clock
        self._oauth = auth if isinstance(auth, OAuth2ClientCredentials) else None
        self._static = _static(auth)
        self._fetcher: HttpTokenFetcher | None = None
        if self._oauth is not None and fetch is None:
            self._fetcher = HttpTokenFetcher(name, self._oauth)
            fetch = self._fetcher
        self._fetch = fetch
        self._token: _Token | None = None
        self._refresh: asyncio.Task[_Token] | None = None
        self._no_refresh_before = float("-inf")
        self.fetches = 0
        """Token requests made so far (for metrics and tests)."""

    async def credentials(self) -> Credentials:
        """The credentials for the next request (a cached token while it is valid)."""
        if self._oauth is None:
            return self._static
        token = self._token
        now = self._clock.monotonic()
        if token is None or now >= token.expires_at:
            token = await asyncio.shield(self._start_refresh())
        elif now >= token.refresh_at and now >= self._no_refresh_before:
            self._start_refresh()
        return token.credentials

    async def after_unauthorized(self, used: Credentials) -> Credentials | None:
        """New credentials after the upstream answered 401 to `used`, or None when a retry
        cannot help (static credentials)."""
        if self._oauth is None or used.token is None:
            return None
        token = self._token
        if token is not None and token.credentials.token != used.token:
            return token.credentials  # another call already replaced the refused token
        refresh = self._refresh
        if refresh is None:
            self._token = None  # the upstream no longer takes it, whatever its expiry
            refresh = self._start_refresh()
        return (await asyncio.shield(refresh)).credentials

    def _start_refresh(self) -> asyncio.Task[_Token]:
        """The running token request, or a new one (one at a time)."""
        if self._refresh is None:
            self._refresh = asyncio.get_running_loop().create_task(self._fetch_token())
            self._refresh.add_done_callback(self._refreshed)
        return self._refresh

    async def _fetch_token(self) -> _Token:
        assert self._oauth is not None and self._fetch is not None
        started = self._clock.monotonic()
        self.fetches += 1
        grant = await self._fetch()
        lifetime = grant.expires_in if grant.expires_in else self._oauth.default_expires_in
        ahead = min(self._oauth.refresh_before, lifetime / 2)
        credentials = Credentials(
            headers=(("Authorization", f"Bearer {grant.access_token}"),),
            token=grant.access_token,
        )
        # Lifetimes count from the request, not the answer: the token may be that old.
        token = _Token(credentials, started + lifetime, started + lifetime - ahead)
        self._token = token
        return token

    def _refreshed(self, task: asyncio.Task[_Token]) -> None:
        self._refresh = None
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so a background failure is never lost
        if error is not None:
            self._no_refresh_before = self._clock.monotonic() + _RETRY_REFRESH
            _log.warning(
                "token refresh failed",
                extra={"integration": self._name, "error": str(error)[:300]},
            )

    async def close(self) -> None:
        """Stop a token request in flight and close the token client."""
        refresh = self._refresh
        if refresh is not None:
            refresh.cancel()
            with contextlib.suppress(BaseException):
                await refresh
        if self._fetcher is not None:
            await self._fetcher.close()


class HttpTokenFetcher:
    """Token requests to `token_url` (RFC 6749 section 4.4) on a client of their own: the
    token endpoint is often another host, and gets nothing of the upstream's headers."""

    def __init__(self, name: str, settings: OAuth2ClientCredentials) -> None:
        self._upstream = f"{name} token endpoint"
        self._settings = settings
        self._client: httpx2.AsyncClient | None = None

    def _client_for(self) -> httpx2.AsyncClient:
        if self._client is None:
            import httpx2

            from sidecar.connections._tls import client_ssl_context

            context = client_ssl_context(self._settings.tls)
            self._client = httpx2.AsyncClient(
                verify=context if context is not None else True,
                timeout=self._settings.timeout,
                follow_redirects=False,
            )
        return self._client

    async def __call__(self) -> TokenGrant:
        from sidecar.connections.http.errors import mapped_http_errors, parse_retry_after

        settings = self._settings
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        secret = settings.client_secret.get_secret_value()
        if settings.client_auth == "basic":
            pair = f"{_form_quote(settings.client_id)}:{_form_quote(secret)}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        else:
            form["client_id"] = settings.client_id
            form["client_secret"] = secret
        if settings.scope:
            form["scope"] = settings.scope
        if settings.audience:
            form["audience"] = settings.audience
        client = self._client_for()
        with mapped_http_errors(self._upstream):
            response = await client.post(settings.token_url, data=form, headers=headers)
            body = response.content[:_MAX_TOKEN_RESPONSE]
        status = response.status_code
        if status in (400, 401, 403):
            # invalid_client, invalid_grant, invalid_scope: the sidecar's settings are wrong.
            raise FailedPrecondition(
                f"{self._upstream} refused the sidecar's client credentials (HTTP {status})",
                reason="UPSTREAM_AUTH_FAILED",
                metadata={"target": self._upstream, "upstream_status": str(status)},
            )
        if status >= 300:
            raise Unavailable(
                f"{self._upstream} failed (HTTP {status})",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self._upstream, "upstream_status": str(status)},
                retry_after=parse_retry_after(response.headers),
            )
        return _grant(body, self._upstream)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _form_quote(text: str) -> str:
    """client_secret_basic form-encodes id and secret first (RFC 6749 section 2.3.1)."""
    from urllib.parse import quote_plus

    return quote_plus(text)


def _grant(body: bytes, upstream: str) -> TokenGrant:
    try:
        answer: Any = json.loads(body)
    except ValueError:
        answer = None
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n\0"):
        raise _bad_answer(upstream, "no access_token")
    expires = answer.get("expires_in")
    if isinstance(expires, str) and expires.isdigit():
        expires = int(expires)
    if not isinstance(expires, int | float) or isinstance(expires, bool) or expires <= 0:
        expires = None
    return TokenGrant(token, float(expires) if expires is not None else None)


def _bad_answer(upstream: str, detail: str) -> SidecarError:
    return Unavailable(
        f"{upstream} sent an unusable answer: {detail}",
        reason="UPSTREAM_UNAVAILABLE",
        metadata={"target": upstream},
    )
