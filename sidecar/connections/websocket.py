"""WebSocket connections: one configured WebSocket server (URL, handshake headers, TLS) and
the sessions opened on it with the `websockets` library, one socket per session.

Unlike an HTTP pool, WebSocket sessions cannot be shared between calls: each
WebSocketService.Connect (and each GraphQL subscription) opens its own. What the
connection shares is everything else: the URL that every session must stay under (the
no-open-proxy rule lives here: `join_url` and `caller_path_problem`), the TLS context, the
headers, the error mapping, and shutdown (`close` closes every open session with 1001).

It never follows a redirect (a 3xx handshake answer is refused: it could name another
host) and never goes through an environment proxy.

    connection = WebSocketConnection("feed", endpoint, timeouts)
    session = await connection.open("/rooms/7", {"x-tenant": "a"}, max_size=..., ...)
    ...
    connection.forget(session)          # once the session is closed
    await connection.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from sidecar.config import ConnectionPoolConfig, ServiceBase, TimeoutsConfig
from sidecar.config.websocket import WebSocketEndpoint
from sidecar.connections._tls import client_ssl_context
from sidecar.connections.http.errors import (
    connection_error,
    error_message,
    status_error,
    upstream_timeout,
)
from sidecar.errors import InvalidArgument, SidecarError, Unavailable

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = [
    "MAX_CALLER_PATH",
    "NORMAL_CLOSE_CODES",
    "WebSocketConnection",
    "caller_path_problem",
    "close_error",
    "close_session",
    "join_url",
    "open_connection",
]

MAX_CALLER_PATH: Final = 2048
"""Bytes of a caller's path and query at most."""
NORMAL_CLOSE_CODES: Final = frozenset({1000})
"""Close codes that end a session as planned."""
_INTERRUPTED: Final = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
_REJECTED: Final = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
_FORBIDDEN_IN_PATH: Final = re.compile(r"[\x00-\x20\x7f#\\]|%(?:2[eEfF]|5[cC]|0[0-9a-fA-F]|7[fF])")
"""Control characters, space, `#`, a backslash, and percent-encoded dots, slashes,
backslashes and control characters."""


def open_connection(
    name: str,
    settings: WebSocketEndpoint | ServiceBase,
    pool: ConnectionPoolConfig,
    timeouts: TimeoutsConfig,
) -> WebSocketConnection:
    """The websocket connection of a `connections:` entry, or of a service with inline
    `url:` settings (its own). No I/O; `pool` does not apply (one socket per session)."""
    if not isinstance(settings, WebSocketEndpoint):
        raise TypeError(f"websocket connection {name} needs WebSocketEndpoint settings")
    return WebSocketConnection(name, settings, timeouts)


def caller_path_problem(path: str) -> str | None:
    """Why a caller's path (and query) may not go under a configured URL, or None."""
    if not path:
        return None
    if len(path) > MAX_CALLER_PATH and len(path.encode()) > MAX_CALLER_PATH:
        return f"must be at most {MAX_CALLER_PATH} bytes"
    if not path.startswith("/") or path.startswith("//"):
        return "must start with a single '/' (a path under the target's URL, never a URL)"
    if _FORBIDDEN_IN_PATH.search(path):
        return (
            "may not hold spaces, control characters, '#', '\\\\' or percent-encoded "
            "dots, slashes, backslashes or control characters"
        )
    route = path.split("?", 1)[0]
    if any(segment in (".", "..") for segment in route.split("/")):
        return "may not hold '.' or '..' segments"
    return None


def join_url(base: str, path: str) -> str:
    """`base` with a caller's (checked) `path` and query added under its own path."""
    if not path:
        return base
    parts = urlsplit(base)
    route, _, query = path.partition("?")
    joined_path = parts.path.rstrip("/") + route
    joined_query = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, joined_path, joined_query, ""))


def close_error(upstream: str, code: int, reason: str) -> SidecarError | None:
    """The error a close by the upstream ends a call with, or None for a planned end
    (1000, and application codes 3000-4999 whose meaning only the caller knows). Every
    error carries `close_code` and `close_reason` in its metadata."""
    if code in NORMAL_CLOSE_CODES or 3000 <= code <= 4999:
        return None
    metadata = {"target": upstream, "close_code": str(code), "close_reason": reason[:123]}
    said = f" ({reason})" if reason else ""
    if code in _REJECTED:
        return InvalidArgument(
            f"{upstream} closed the WebSocket with {code}{said}: it refused what was sent",
            reason="UPSTREAM_REJECTED",
            metadata=metadata,
        )
    return Unavailable(
        f"{upstream} closed the WebSocket with {code}{said}",
        reason="STREAM_INTERRUPTED",
        metadata=metadata,
    )


async def close_session(session: ClientConnection, code: int = 1000, text: str = "") -> None:
    """Close one session with `code` and the reason `text` (the closing handshake waits for
    the peer's close frame, at most the session's close timeout). Never raises.

    A session whose receive queue is full has stopped reading its socket (back-pressure),
    so it would never see the peer's answering close frame: reading resumes first. The
    peer stops sending data once it reads the close, so what arrives meanwhile is bounded by
    what it had in flight.
    """
    with contextlib.suppress(Exception):
        session.transport.resume_reading()
    with contextlib.suppress(Exception):  # a close that fails has nothing more to release
        await session.close(code, text)


class WebSocketConnection:
    """One WebSocket server and the sessions open on it.

    Args:
        name: The connection's name (errors carry it as `target`).
        endpoint: Its settings: a `connections:` entry, or a service's own (inline) ones.
        timeouts: `connect` bounds each opening handshake.
    """

    type = "websocket"

    def __init__(self, name: str, endpoint: WebSocketEndpoint, timeouts: TimeoutsConfig) -> None:
        self.name = name
        self.url = endpoint.url
        self.headers: Mapping[str, str] = dict(endpoint.headers)
        self.probed = endpoint.health_check
        """Health checks open and close a WebSocket; without health_check it is unknown."""
        self.timeouts = timeouts
        self._ssl = client_ssl_context(endpoint.tls)
        self._server_name = endpoint.tls.server_name if endpoint.tls.enabled else None
        self._sessions: set[ClientConnection] = set()
        self._closed = False

    @property
    def open_sessions(self) -> int:
        """Sessions opened and not yet forgotten."""
        return len(self._sessions)

    async def open(
        self,
        path: str = "",
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = (),
        *,
        url: str | None = None,
        max_size: int = 1024 * 1024,
        max_queue: int = 16,
        write_limit: int = 32 * 1024,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float | None = None,
    ) -> ClientConnection:
        """Open one session at the connection's URL (or `url`, its owner's own) plus `path`.

        `max_queue` frames at most wait in the receive buffer: when it is full the library
        stops reading the socket, so the upstream is held by TCP flow control.
        `write_limit` bytes at most wait to be written before `send` waits.

        Raises:
            InvalidArgument: `path` is not a plain path under the URL (INVALID_REQUEST).
            Unavailable, DeadlineExceeded, FailedPrecondition, ...: the handshake failed
                (its HTTP status mapped as for an http connection).
        """
        from websockets.typing import Subprotocol

        base = url or self.url
        if base is None:
            raise TypeError(f"websocket connection {self.name} has no URL")
        problem = caller_path_problem(path)
        if problem is not None:
            raise InvalidArgument(
                f"path: {problem}", reason="INVALID_REQUEST", metadata={"field": "path"}
            )
        if self._closed:
            raise Unavailable(
                f"connection {self.name} is closed",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self.name},
            )
        options: dict[str, Any] = {}
        if base.startswith("wss:"):
            options["ssl"] = self._ssl if self._ssl is not None else True
            if self._server_name is not None:
                options["server_hostname"] = self._server_name
        with self._mapped_handshake_errors():
            session: ClientConnection = await _no_redirects()(
                join_url(base, path),
                additional_headers={**self.headers, **(headers or {})},
                subprotocols=[Subprotocol(item) for item in subprotocols] or None,
                compression=None,
                user_agent_header=None,
                proxy=None,
                open_timeout=open_timeout if open_timeout is not None else self.timeouts.connect,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=5.0,
                max_size=max_size,
                max_queue=(max_queue, max(max_queue // 4, 1)),
                write_limit=write_limit,
                **options,
            )
        if self._closed:  # closed while the handshake ran
            await close_session(session, 1001)
            raise Unavailable(
                f"connection {self.name} is closed",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self.name},
            )
        self._sessions.add(session)
        return session

    def forget(self, session: ClientConnection) -> None:
        """Stop tracking a session its owner closed."""
        self._sessions.discard(session)

    @contextlib.contextmanager
    def _mapped_handshake_errors(self) -> Iterator[None]:
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

        metadata = {"target": self.name}
        try:
            yield
        except InvalidStatus as exc:
            response = exc.response
            status = response.status_code
            if status < 400:  # a redirect, never followed; or a 1xx/2xx that is no upgrade
                raise connection_error(
                    self.name,
                    f"the handshake was answered {status} (redirects are not followed)",
                    metadata=metadata,
                ) from exc
            raise status_error(
                self.name, status, error_message(bytes(response.body or b"")), metadata=metadata
            ) from exc
        except TimeoutError as exc:
            raise upstream_timeout(self.name, "opening handshake", metadata=metadata) from exc
        except (InvalidHandshake, InvalidURI, OSError, ssl.SSLError, EOFError) as exc:
            detail = str(exc)[:200] or type(exc).__name__
            raise connection_error(self.name, detail, metadata=metadata) from exc

    async def ping(self) -> None:
        """Open a WebSocket and close it (1000), when health_check is on.

        Raises:
            Unavailable, DeadlineExceeded, ...: the handshake failed.
        """
        if self._closed:
            raise Unavailable(
                f"connection {self.name} is closed",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self.name},
            )
        if not self.probed:
            return
        session = await self.open(ping_interval=None)
        try:
            await close_session(session, 1000)
        finally:
            self.forget(session)

    async def close(self) -> None:
        """Close every open session with 1001 (going away). Idempotent."""
        if self._closed:
            return
        self._closed = True
        sessions, self._sessions = list(self._sessions), set()
        await asyncio.gather(
            *(close_session(session, 1001, "sidecar shutting down") for session in sessions),
            return_exceptions=True,
        )


@functools.cache
def _no_redirects() -> Any:
    from websockets.asyncio.client import connect

    class NoRedirects(connect):
        """`connect` that treats a redirect as a failed handshake (it could name any host)."""

        def process_redirect(self, exc: Exception) -> Exception | str:
            return exc

    return NoRedirects
