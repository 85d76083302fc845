"""`AiohttpTransport`: the `httpx2` client's HTTP/1.1 requests sent on aiohttp's pool.

httpx2's own transport reads a body through h11 (pure Python) and anyio's stream and
cancel-scope layers on every socket read: relaying a model's answer, one small chunk every
few ms, that cost more CPU per chunk than the whole gRPC write. aiohttp parses HTTP with
llhttp (C) in its protocol callbacks; under the same `httpx2.AsyncClient` (its API,
redirects, auth, decoding and errors unchanged) the sidecar's server CPU per relayed chunk
fell from ~178 to ~110-124 µs (`python -m bench.ai paced`). HTTP/2 (`http2: true`) and the
environment's proxies stay on httpx2's transport.

aiohttp's own conveniences are off so that the wire stays httpx2's: no cookie jar, no
decompression (httpx2 decodes), no redirects (httpx2 follows them), none of its default
headers, no re-quoting of the URL. A body is handed out an HTTP chunk at a time, as h11
does, and what arrived before a cut is handed out before the error. aiohttp's errors are
raised as httpx2's (`_mapped`), so callers see one client.
"""

from __future__ import annotations

import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Final

import aiohttp
import httpx2
import yarl

__all__ = ["AiohttpTransport"]

_MAX_HEADER_LINE: Final = 16 * 1024
"""Bytes at most of the status line and of one response header (aiohttp's default is 8 KiB;
h11, under httpx2's own transport, allows a 16 KiB head)."""

_SKIP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
"""Headers aiohttp adds when absent: httpx2 sends its own or none."""


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends an `httpx2.Request` with an aiohttp session (made on first use, in the loop).

    Args:
        ssl_context: TLS settings for https URLs (None: httpx2's default verification).
        limits: Connections at most (`max_connections`; None is unbounded) and how long an
            idle one is kept (`keepalive_expiry`).
    """

    def __init__(self, ssl_context: ssl.SSLContext | None, limits: httpx2.Limits) -> None:
        self._ssl = ssl_context if ssl_context is not None else httpx2.create_ssl_context()
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._connector: aiohttp.TCPConnector | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            limit_per_host=0,
            # aiohttp keeps an idle connection forever at 0, as httpx2 does at None.
            keepalive_timeout=self.limits.keepalive_expiry or 0,
            ssl=self._ssl,
        )
        self._connector = connector
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
        )
        return self._session

    def pool_usage(self) -> tuple[int, int] | None:
        """(connections in use, idle ones), read from aiohttp's connector (None before the
        first request, or if a new aiohttp stores them elsewhere)."""
        connector = self._connector
        acquired = getattr(connector, "_acquired", None)
        idle = getattr(connector, "_conns", None)
        if acquired is None or not isinstance(idle, Mapping):
            return None
        return len(acquired), sum(len(waiting) for waiting in idle.values())

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session or self._open()
        # A body of known bytes goes out whole; any other streams out as it is produced
        # (httpx2 has set its Content-Length or Transfer-Encoding: chunked header).
        stream = request.stream
        body: bytes | _Upload | None = (
            await request.aread() or None
            if isinstance(stream, httpx2.ByteStream)
            else _Upload(stream)
        )
        timeout = _timeout(request.extensions.get("timeout", {}))
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            # aiohttp chunks a body of unknown length itself, and names it so.
            if body is None or isinstance(body, bytes) or name.lower() != b"transfer-encoding"
        ]
        server_hostname = request.extensions.get("sni_hostname")
        try:
            with _mapped(opening=True):
                response = await session.request(
                    request.method,
                    # Sent as httpx2 encoded it: yarl must not re-quote a caller's path.
                    yarl.URL(str(request.url), encoded=True),
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=timeout,
                    server_hostname=server_hostname,
                )
        except httpx2.TransportError:
            if isinstance(body, _Upload) and body.error is not None:
                raise body.error from None  # the caller's own body failed, not the network
            raise
        return httpx2.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Upload:
    """A request body streamed out as it is produced; keeps the error its producer raised
    (aiohttp reports it as a failed send)."""

    def __init__(self, stream: httpx2.SyncByteStream | httpx2.AsyncByteStream) -> None:
        assert isinstance(stream, httpx2.AsyncByteStream), "an async client's request body"
        self._stream = stream
        self.error: Exception | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            self.error = exc
            raise


class _Body(httpx2.AsyncByteStream):
    """An aiohttp response's body, as it arrives: at most one HTTP chunk of a chunked
    body at a time, as httpx2's own transport hands it out (one upstream event per read
    where the upstream writes one per chunk)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _mapped(opening=False):
            try:
                while True:
                    data, chunk_end = await content.readchunk()
                    if data:
                        yield data  # bounded by aiohttp's read buffer: it pauses the socket
                    elif not chunk_end:
                        return  # the end of the body
            except aiohttp.ClientPayloadError:
                if received := _received_before_error(content):
                    yield received  # what the upstream sent before the cut is the caller's
                raise

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()  # read to the end: the connection goes back to the pool
        else:
            response.close()  # unfinished: closing the connection stops the upstream


def _received_before_error(content: aiohttp.StreamReader) -> bytes:
    """The body aiohttp had received and not yet handed out when the connection broke (it
    raises the error first, and keeps this in private fields; b"" if a new aiohttp keeps
    it elsewhere)."""
    buffer = getattr(content, "_buffer", None)
    offset = getattr(content, "_buffer_offset", 0)
    if not isinstance(buffer, collections.deque) or not isinstance(offset, int):
        return b""
    return b"".join(buffer)[offset:]


def _timeout(given: Mapping[str, Any]) -> aiohttp.ClientTimeout:
    """httpx2's timeouts in aiohttp's terms: waiting for a pooled connection and
    connecting together, the connect itself, and the gap between two reads (aiohttp has
    no write timeout: a stalled write ends in the read timeout that follows it)."""
    connect, pool = given.get("connect"), given.get("pool")
    waiting = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(
        total=None, connect=waiting, sock_connect=connect, sock_read=given.get("read")
    )


@contextlib.contextmanager
def _mapped(*, opening: bool) -> Iterator[None]:
    """Re-raise aiohttp's errors as the httpx2 errors its own transport raises for them."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc) or "connect timed out") from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx2.ReadTimeout(str(exc) or "read timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx2.ConnectError(str(exc)) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise httpx2.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
    except aiohttp.ClientResponseError as exc:  # a malformed status line or headers
        raise httpx2.RemoteProtocolError(exc.message or type(exc).__name__) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx2.UnsupportedProtocol(str(exc)) from exc
    except aiohttp.ClientError as exc:  # an OS error on the socket, and the rest
        error = httpx2.ConnectError if opening else httpx2.ReadError
        raise error(str(exc) or type(exc).__name__) from exc
