"""`ApiBackend`: one REST upstream (`type: api`) on an http connection's client.

One call of `call` or `open` is one attempt of the target's pipeline. Within it:

- the credentials of the `AuthenticationManager` are added, and a 401 answered to an OAuth2
  token is followed by one refresh and one resend;
- redirects are followed only when the service says so, only within the upstream
  (`request.redirect_url`), and only while the body can be sent again;
- a 429 is waited out (Retry-After, else the retry policy's backoff) and resent, up to the
  retry policy's `max_retries`, for requests that may be sent twice, when the wait fits in
  the caller's deadline; it never counts against the breaker (it is the caller's quota,
  not an outage);
- a 5xx answer is raised as `FailedAnswer` (an `Unavailable` carrying the whole answer):
  the pipeline counts it against the breaker and retries it (honouring Retry-After within
  the deadline) when the request may be sent twice; when it gives up, the servicer answers
  the last upstream answer as data.

Every other status is data: returned, never raised. The sidecar's own failures (no
connection, timeouts, a body past `max_response_bytes`, a redirect off the upstream) are
`sidecar.errors`.

    backend.prepare(request, request_id="r-1", traceparent=None)  # InvalidArgument if refused
    answer = await backend.call(prepared, retryable=True, deadline=deadline)
    stream = await backend.open(prepared, retryable=True, deadline=deadline)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx2

from sidecar.backends.api.auth import AuthenticationManager, Credentials
from sidecar.backends.api.request import (
    ApiRequest,
    PreparedRequest,
    Upstream,
    prepare,
    redirect_url,
    response_headers,
)
from sidecar.backends.api.trace import traceparent_for
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import ServicePolicies
from sidecar.config.services.api import ApiServiceConfig
from sidecar.connections.http.errors import mapped_http_errors, parse_retry_after
from sidecar.connections.http.sse import SSEDecoder
from sidecar.connections.http.stream import request_timeout
from sidecar.errors import ResourceExhausted, Unavailable
from sidecar.observability.tracing import annotate_span, recorded_traceparent
from sidecar.resilience import Clock, Deadline

if TYPE_CHECKING:
    from sidecar.connections.http.connection import HttpConnection

__all__ = ["SPEC", "ApiAnswer", "ApiBackend", "ApiStream", "FailedAnswer", "build"]

REQUEST_ID_HEADER: Final = "X-Request-ID"
TRACEPARENT_HEADER: Final = "traceparent"
MAX_CHUNK: Final = 64 * 1024
"""Largest body chunk handed to the servicer (one gRPC message)."""
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """An upstream's whole answer."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    http_version: str


class FailedAnswer(Unavailable):
    """A 5xx answer: an upstream failure for the pipeline (breaker, retry), data for the
    caller once the pipeline gives up (`answer`)."""

    def __init__(self, upstream: str, answer: ApiAnswer, retry_after: float | None) -> None:
        super().__init__(
            f"{upstream} failed (HTTP {answer.status})",
            reason="UPSTREAM_UNAVAILABLE",
            metadata={"target": upstream, "upstream_status": str(answer.status)},
            retry_after=retry_after,
        )
        self.answer = answer


def _too_large(upstream: str, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"{upstream} answered more than {limit} bytes; use CallStream for large bodies",
        reason="RESULT_TOO_LARGE",
        metadata={"target": upstream, "limit": str(limit)},
    )


class ApiStream:
    """An open upstream answer, read in chunks or as Server-Sent Events."""

    def __init__(self, upstream: str, response: httpx2.Response) -> None:
        self._upstream = upstream
        self._response = response
        encoded = "content-encoding" in response.headers
        self._encoded = encoded
        self.status = response.status_code
        self.headers = response_headers(response.headers.multi_items(), decoded=encoded)
        self.http_version = response.http_version

    @property
    def is_event_stream(self) -> bool:
        content_type = self._response.headers.get("content-type", "")
        return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, in order, in chunks of at most `MAX_CHUNK` bytes.

        Raises:
            Unavailable: the stream broke off (STREAM_INTERRUPTED).
            DeadlineExceeded: no bytes came within the read timeout.
        """
        response = self._response
        with mapped_http_errors(self._upstream, opening=False):
            reads = response.aiter_bytes() if self._encoded else response.aiter_raw()
            async for data in reads:
                if len(data) <= MAX_CHUNK:
                    yield data
                    continue
                view = memoryview(data)
                for start in range(0, len(data), MAX_CHUNK):
                    yield bytes(view[start : start + MAX_CHUNK])

    async def events(self) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """The body as Server-Sent Events: (event name, data) per event, one list per read
        (an incomplete event at the end is dropped, as the SSE specification says).

        Raises:
            Unavailable: the stream broke off or an event grew too large (STREAM_INTERRUPTED).
        """
        decoder = SSEDecoder()
        with mapped_http_errors(self._upstream, opening=False):
            reads = self._response.aiter_bytes() if self._encoded else self._response.aiter_raw()
            async for data in reads:
                events = decoder.feed(data)
                if events:
                    yield events

    async def aclose(self) -> None:
        """Close the upstream response (an unfinished body closes its connection)."""
        await self._response.aclose()


class ApiBackend:
    """The backend of one api service.

    Args:
        name: The service's name (errors carry it as `target`).
        settings: Its settings.
        connection: The http connection it talks over (its client and base URL).
        policies: Its resolved policies (timeouts, and the retry policy for 429s).
        clock: Waits and token expiry run on it.
        auth: Its credentials (default: built from `settings.auth`).
    """

    def __init__(
        self,
        name: str,
        settings: ApiServiceConfig,
        connection: HttpConnection,
        policies: ServicePolicies,
        clock: Clock,
        *,
        auth: AuthenticationManager | None = None,
    ) -> None:
        if connection.base_url is None:
            raise TypeError(f"api service {name} needs a connection with a base_url")
        self.name = name
        self.upstream = Upstream.parse(connection.base_url)
        self.max_request_bytes = settings.max_request_bytes
        self.max_response_bytes = settings.max_response_bytes
        self._connection = connection
        self._client = connection.client
        self._clock = clock
        self._auth = auth or AuthenticationManager(name, settings.auth, clock=clock)
        self._headers = tuple(settings.headers.items())
        self._query = tuple(settings.query.items())
        self._follow = settings.follow_redirects
        self._max_redirects = settings.max_redirects
        self._retry = policies.retry_policy
        self._timeout = request_timeout(policies.timeouts.connect, policies.timeouts.read)
        self._metadata: Mapping[str, str] = {"target": name}

    @property
    def auth(self) -> AuthenticationManager:
        return self._auth

    def prepare(
        self, request: ApiRequest, *, request_id: str, traceparent: str | None
    ) -> PreparedRequest:
        """Check a caller's request (no-open-proxy rules) and add the call's identity:
        `X-Request-ID` and the W3C `traceparent` (a new one when the call has none).

        Raises:
            InvalidArgument: the request is refused; nothing is sent.
        """
        identity = (
            (REQUEST_ID_HEADER, request_id),
            (TRACEPARENT_HEADER, traceparent_for(traceparent)),
        )
        given = {name.lower() for name, _ in request.headers}
        defaults = (
            *self._headers,
            *(pair for pair in identity if pair[0].lower() not in given),
        )
        return prepare(
            request,
            self.upstream,
            default_headers=defaults,
            default_query=self._query,
            max_body_bytes=self.max_request_bytes,
        )

    async def call(
        self,
        prepared: PreparedRequest,
        *,
        retryable: bool,
        deadline: Deadline | None = None,
        max_bytes: int | None = None,
    ) -> ApiAnswer:
        """One attempt: send, and read the whole answer.

        Raises:
            FailedAnswer: a 5xx answer (the pipeline may retry it).
            ResourceExhausted: the body is larger than `max_bytes` (RESULT_TOO_LARGE).
            Unavailable, DeadlineExceeded: the upstream cannot be reached or is too slow.
            InvalidArgument: a redirect off the upstream.
        """
        limit = max_bytes if max_bytes is not None else self.max_response_bytes
        response = await self._send(prepared, prepared.body, retryable, deadline)
        try:
            body = await self._read(response, limit)
        finally:
            await response.aclose()
        answer = _answer(response, body)
        if answer.status >= 500:
            raise FailedAnswer(self.name, answer, parse_retry_after(response.headers))
        return answer

    async def open(
        self,
        prepared: PreparedRequest,
        *,
        retryable: bool,
        deadline: Deadline | None = None,
        body: AsyncIterator[bytes] | None = None,
    ) -> ApiStream:
        """One attempt: send (with `body` streamed after `prepared.body`, if given) and
        return the open answer once its head arrived. A 5xx answer is read (up to
        `max_response_bytes`) and raised as `FailedAnswer`, as `call` does.
        """
        content: bytes | AsyncIterator[bytes] | None = prepared.body
        if body is not None:
            content = _prefixed(prepared.body, body)
            retryable = False
        response = await self._send(prepared, content, retryable, deadline)
        if response.status_code < 500:
            return ApiStream(self.name, response)
        try:
            data = await self._read(response, self.max_response_bytes)
        finally:
            await response.aclose()
        raise FailedAnswer(self.name, _answer(response, data), parse_retry_after(response.headers))

    async def _send(
        self,
        prepared: PreparedRequest,
        content: bytes | AsyncIterator[bytes] | None,
        retryable: bool,
        deadline: Deadline | None,
    ) -> httpx2.Response:
        """Send, resending after 429s that may be waited out; the open response."""
        replayable = not isinstance(content, AsyncIterator)
        waits = 0
        while True:
            response = await self._exchange(prepared, content, replayable)
            if response.status_code != 429 or not (retryable and replayable):
                return response
            delay = self._rate_limited_delay(response.headers, waits, deadline)
            if delay is None:
                return response
            await response.aclose()
            waits += 1
            await self._clock.sleep(delay)

    def _rate_limited_delay(
        self, headers: Mapping[str, str], waits: int, deadline: Deadline | None
    ) -> float | None:
        """How long to wait before resending after a 429, or None to answer it."""
        retry = self._retry
        if waits >= retry.max_retries:
            return None
        advised = parse_retry_after(headers)
        if advised is None:
            delay = min(retry.base_delay * retry.backoff_multiplier**waits, retry.max_delay)
        elif advised > retry.max_delay:
            return None
        else:
            delay = advised
        remaining = deadline.remaining() if deadline is not None else None
        if remaining is not None and delay >= remaining:
            return None  # the caller would be gone before the resend: answer the 429 now
        return delay

    async def _exchange(
        self,
        prepared: PreparedRequest,
        content: bytes | AsyncIterator[bytes] | None,
        replayable: bool,
    ) -> httpx2.Response:
        """One request with credentials, the 401 refresh-and-resend, and redirects within
        the upstream; the open response."""
        credentials = await self._auth.credentials()
        method, url, query = prepared.method, prepared.url, prepared.query
        response = await self._once(method, url, query, prepared, credentials, content)
        if response.status_code == 401 and replayable:
            try:
                fresh = await self._auth.after_unauthorized(credentials)
            except BaseException:
                await response.aclose()
                raise
            if fresh is not None:
                await response.aclose()
                credentials = fresh
                response = await self._once(method, url, query, prepared, credentials, content)
        redirects = 0
        while self._follow and response.status_code in _REDIRECTS:
            location = response.headers.get("location")
            if location is None or redirects >= self._max_redirects:
                return response
            status = response.status_code
            if status in (307, 308) and not replayable:
                return response  # the body is gone: the caller sees the redirect
            await response.aclose()
            target = redirect_url(self.upstream, url, location)  # refuses other hosts
            redirects += 1
            if status == 303 or (status in (301, 302) and method == "POST"):
                method = "GET" if method != "HEAD" else method
                content = None
            url, query = target, ()  # the Location's own query, as given
            response = await self._once(method, url, query, prepared, credentials, content)
        return response

    async def _once(
        self,
        method: str,
        url: str,
        query: tuple[tuple[str, str], ...],
        prepared: PreparedRequest,
        credentials: Credentials,
        content: bytes | AsyncIterator[bytes] | None,
    ) -> httpx2.Response:
        headers = [*prepared.headers, *credentials.headers]
        traced = recorded_traceparent()
        if traced is not None:  # the upstream's parent is this attempt's span
            headers = [
                (name, traced if name.lower() == TRACEPARENT_HEADER else value)
                for name, value in headers
            ]
        if content is None:
            headers = [pair for pair in headers if pair[0].lower() != "content-type"]
        params = (*query, *credentials.query)
        target: httpx2.URL | str = url
        if "?" in url:  # a redirect's Location: httpx would replace its query by `params`
            target = httpx2.URL(url).copy_merge_params(params)
        request = self._client.build_request(
            method,
            target,
            content=content,
            headers=headers,
            params=params if params and target is url else None,
            timeout=self._timeout,
        )
        if traced is not None:
            sent = request.url
            annotate_span(
                {
                    "http.request.method": method,
                    "server.address": sent.host,
                    # No query or userinfo: either may hold a credential.
                    "url.full": str(sent.copy_with(query=None, userinfo=b"")),
                }
            )
        with mapped_http_errors(self.name, metadata=self._metadata):
            response = await self._client.send(request, stream=True, follow_redirects=False)
        if traced is not None:
            annotate_span({"http.response.status_code": response.status_code})
        return response

    async def _read(self, response: httpx2.Response, limit: int) -> bytes:
        """The whole body, or RESULT_TOO_LARGE as soon as it passes `limit`."""
        declared = response.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > limit
            and "content-encoding" not in response.headers
        ):
            raise _too_large(self.name, limit)
        parts: list[bytes] = []
        total = 0
        with mapped_http_errors(self.name, metadata=self._metadata, opening=False):
            async for data in response.aiter_bytes():
                total += len(data)
                if total > limit:
                    raise _too_large(self.name, limit)
                parts.append(data)
        return b"".join(parts)

    async def ping(self) -> None:
        """The connection's health check."""
        await self._connection.ping()

    async def close(self) -> None:
        """Close the token client (the connection is closed by its owner)."""
        await self._auth.close()


def _answer(response: httpx2.Response, body: bytes) -> ApiAnswer:
    """A read answer (its headers as a caller sees them)."""
    decoded = "content-encoding" in response.headers
    headers = response_headers(response.headers.multi_items(), decoded=decoded)
    return ApiAnswer(response.status_code, headers, body, response.http_version)


async def _prefixed(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        if chunk:
            yield chunk


def build(context: BuildContext[ApiServiceConfig]) -> ApiBackend:
    """The backend of one api service, on its http connection (no I/O)."""
    from sidecar.connections.http.connection import HttpConnection

    connection = context.connection
    if not isinstance(connection, HttpConnection):
        raise TypeError("an api service needs an http connection")
    return ApiBackend(context.name, context.settings, connection, context.policies, context.clock)


SPEC = BackendSpec(
    type="api",
    backend="http",
    settings=ApiServiceConfig,
    connection_type="http",
    build=build,
)
