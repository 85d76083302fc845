"""`WebSocketUpstream`: the backend of a `type: websocket` service, opening bridged sessions
on its websocket connection; `BridgeSession`, one open WebSocket with bounded buffers.

The caller's half of a session (what may be asked for) is checked here, before anything is
opened: the path goes under the connection's URL (`caller_path_problem`), headers must be
in `allowed_headers`, subprotocols must be tokens.

Buffers, both ways bounded by `buffered_frames`:

- upstream -> caller: the library keeps at most `buffered_frames` received frames; when
  that many wait (the caller is not reading, so `receive` is not called), it stops reading
  the socket and TCP flow control holds the upstream;
- caller -> upstream: `send` waits while more than `write_limit` bytes wait to be written
  (the upstream is not reading), so the caller's next frame is not read meanwhile and gRPC
  flow control holds the caller.

    session = await backend.open("/rooms/7", {"x-tenant": "a"}, ())
    await session.send("hello")
    frame = await session.receive()          # str or bytes; SessionClosed at the end
    code, reason = await session.close(1000)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config.services.websocket import HANDSHAKE_HEADERS, WebSocketServiceConfig
from sidecar.connections.websocket import WebSocketConnection, close_session
from sidecar.errors import InvalidArgument, ResourceExhausted

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_VALUE",
    "MAX_SUBPROTOCOLS",
    "SPEC",
    "BridgeSession",
    "SessionClosed",
    "WebSocketUpstream",
]

MAX_HEADERS: Final = 32
MAX_HEADER_NAME: Final = 256
MAX_HEADER_VALUE: Final = 8 * 1024
MAX_SUBPROTOCOLS: Final = 16
_TOKEN: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_WRITE_LIMIT: Final = 64 * 1024
"""Bytes waiting to be written upstream before `send` waits."""


class SessionClosed(Exception):
    """The WebSocket is closed: `code` and `reason` of the close (1006: no close frame);
    `here` when the sidecar closed first (1009: an upstream frame over max_frame_size)."""

    def __init__(self, code: int, reason: str, *, here: bool = False) -> None:
        super().__init__(f"closed with {code}")
        self.code = code
        self.reason = reason
        self.here = here


def _invalid(field: str, message: str, reason: str = "INVALID_REQUEST") -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", reason=reason, metadata={"field": field})


class BridgeSession:
    """One open WebSocket."""

    def __init__(
        self, socket: ClientConnection, connection: WebSocketConnection, on_close: WebSocketUpstream
    ) -> None:
        self._socket = socket
        self._connection = connection
        self._owner = on_close
        self._released = False

    @property
    def subprotocol(self) -> str:
        return self._socket.subprotocol or ""

    async def receive(self) -> str | bytes:
        """The next frame from the upstream, waiting for it.

        Raises:
            SessionClosed: the WebSocket closed (by either side).
        """
        from websockets.exceptions import ConnectionClosed

        try:
            return await self._socket.recv()
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def send(self, frame: str | bytes) -> None:
        """Send one frame upstream, waiting while the write buffer is full.

        Raises:
            SessionClosed: the WebSocket closed.
        """
        from websockets.exceptions import ConnectionClosed

        try:
            await self._socket.send(frame)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def close(self, code: int = 1000, text: str = "") -> tuple[int, str]:
        """Close with `code` and the reason `text` (the handshake waits for the upstream's
        close frame, at most a few seconds) and release the session; the upstream's (code,
        reason). Never raises."""
        try:
            await close_session(self._socket, code, text)
        finally:
            self._release()
        return self.close_code()

    def close_code(self) -> tuple[int, str]:
        """The close (code, reason) received, else (1006, "")."""
        code = self._socket.close_code
        return (code, self._socket.close_reason or "") if code is not None else (1006, "")

    def _closed(self, exc: object) -> SessionClosed:
        received, sent = getattr(exc, "rcvd", None), getattr(exc, "sent", None)
        here = sent is not None and (received is None or not getattr(exc, "rcvd_then_sent", True))
        self._release()
        if received is not None:
            return SessionClosed(int(received.code), str(received.reason), here=here)
        if here and sent is not None:  # no answer to the sidecar's close: say what it sent
            return SessionClosed(int(sent.code), str(sent.reason), here=True)
        return SessionClosed(1006, "")

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._connection.forget(self._socket)
            self._owner.released()


class WebSocketUpstream:
    """Bridged sessions to one configured WebSocket upstream.

    Args:
        name: The service's name (errors carry it as `target`).
        settings: Its settings (bounds, allowed headers, keepalive).
        connection: The websocket connection sessions open on.
    """

    def __init__(
        self, name: str, settings: WebSocketServiceConfig, connection: WebSocketConnection
    ) -> None:
        self.name = name
        self.settings = settings
        self._connection = connection
        self._allowed = frozenset(settings.allowed_headers)
        self._service_headers = dict(settings.headers) if settings.connection else {}
        self._open = 0

    @property
    def open_sessions(self) -> int:
        return self._open

    def check(
        self, path: str, headers: Mapping[str, str], subprotocols: Sequence[str]
    ) -> dict[str, str]:
        """A caller's request, checked; its headers with lower-case names.

        Raises:
            InvalidArgument: a path that would leave the URL, a header not allowed, a bound
                exceeded (INVALID_REQUEST).
        """
        from sidecar.connections.websocket import caller_path_problem

        problem = caller_path_problem(path)
        if problem is not None:
            raise _invalid("path", problem)
        if len(headers) > MAX_HEADERS:
            raise _invalid("headers", f"at most {MAX_HEADERS}")
        checked: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            if len(name) > MAX_HEADER_NAME or not _TOKEN.fullmatch(name):
                raise _invalid("headers", f"{name[:64]!r} is not a header name")
            if lower in HANDSHAKE_HEADERS or lower.startswith("sec-websocket"):
                raise _invalid("headers", f"{lower} is set by the handshake itself")
            if lower not in self._allowed:
                allowed = ", ".join(sorted(self._allowed)) or "none"
                raise _invalid("headers", f"{lower} is not allowed (allowed: {allowed})")
            if len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\0"):
                raise _invalid(
                    f"headers[{lower}]", f"at most {MAX_HEADER_VALUE} bytes, no CR, LF or NUL"
                )
            checked[lower] = value
        if len(subprotocols) > MAX_SUBPROTOCOLS:
            raise _invalid("subprotocols", f"at most {MAX_SUBPROTOCOLS}")
        for item in subprotocols:
            if not _TOKEN.fullmatch(item):
                raise _invalid("subprotocols", f"{item[:64]!r} is not a token")
        return checked

    async def open(
        self,
        path: str,
        headers: Mapping[str, str],
        subprotocols: Sequence[str],
        *,
        max_frame: int | None = None,
    ) -> BridgeSession:
        """Open one session (the request already `check`ed); upstream frames larger than
        max_frame_size (or `max_frame`, if smaller) close it with 1009.

        Raises:
            ResourceExhausted: max_sessions are open (OVER_CAPACITY).
            Unavailable, DeadlineExceeded, FailedPrecondition, ...: the handshake failed.
        """
        settings = self.settings
        if self._open >= settings.max_sessions:
            raise ResourceExhausted(
                f"{self.name} has its {settings.max_sessions} WebSockets open",
                reason="OVER_CAPACITY",
                metadata={"target": self.name, "limit": str(settings.max_sessions)},
            )
        self._open += 1
        try:
            socket = await self._connection.open(
                path,
                {**self._service_headers, **headers},
                subprotocols,
                max_size=min(settings.max_frame_size, max_frame or settings.max_frame_size),
                max_queue=settings.buffered_frames,
                write_limit=_WRITE_LIMIT,
                ping_interval=settings.ping_interval,
                ping_timeout=settings.ping_timeout,
            )
        except BaseException:
            self._open -= 1
            raise
        return BridgeSession(socket, self._connection, self)

    def released(self) -> None:
        """A session ended."""
        self._open -= 1

    async def ping(self) -> None:
        """The connection's health check (a handshake, when health_check is on)."""
        await self._connection.ping()

    async def close(self) -> None:
        """Nothing of its own: sessions end with their calls, the connection closes last."""
        await asyncio.sleep(0)


def _build(context: BuildContext[WebSocketServiceConfig]) -> WebSocketUpstream:
    connection = context.connection
    assert isinstance(connection, WebSocketConnection)
    return WebSocketUpstream(context.name, context.settings, connection)


SPEC = BackendSpec(
    type="websocket",
    backend="upstream",
    settings=WebSocketServiceConfig,
    build=_build,
    connection_type="websocket",
)
