"""WebSocketService: the Connect bridge. Reads the caller's `open`, checks it (before the
pipeline), opens the upstream WebSocket through the target's pipeline, then bridges:

- upstream -> caller: this handler receives one frame and yields it; it receives the next
  only once gRPC took the last (flow control holds a yield while the caller does not
  read), and the session buffers at most `buffered_frames`, then stops reading the socket;
- caller -> upstream: a task reads one request and sends it; while the upstream does not
  read, the send waits and no further request is read.

Whatever ends the call, the session is closed in `finally` (1001 when the caller went
away) and cancellation is re-raised. Open sessions are tracked so that shutdown closes
them, ending their calls with OK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from generated.integration.v1 import websocket_pb2, websocket_pb2_grpc
from sidecar.backends.websocket.upstream import BridgeSession, SessionClosed
from sidecar.connections.websocket import close_error
from sidecar.errors import ResourceExhausted, SidecarError
from sidecar.runtime import Integration, Integrations
from sidecar.servicers._common import Context, call_deadline, call_through, invalid, resolve

__all__ = ["WebSocketServicer"]

_CANCEL_GRACE = 0.05  # seconds: how long an end of requests waits to be told a cancel
_OPEN_WAIT = 30.0  # seconds a call may take to send its `open`
_ENVELOPE_BYTES = 1024  # room for a response's own fields around a frame
_MAX_REASON = 123  # bytes of a close reason (RFC 6455: a control frame's 125, less the code)
_Request = websocket_pb2.WebSocketServiceConnectRequest
_Response = websocket_pb2.WebSocketServiceConnectResponse


class WebSocketServicer(websocket_pb2_grpc.WebSocketServiceServicer):
    """Serve WebSocketService over the configured websocket integrations."""

    def __init__(self, integrations: Integrations, *, max_message_bytes: int) -> None:
        """No frame larger than `max_message_bytes` (the server's largest response message,
        less room for the envelope) is taken from the upstream, whatever a target's
        max_frame_size."""
        self._integrations = integrations
        self._max_frame = max(max_message_bytes - _ENVELOPE_BYTES, 1)
        self._open: set[BridgeSession] = set()
        self._ending = False

    async def Connect(
        self, request_iterator: AsyncIterator[_Request], context: Context
    ) -> AsyncIterator[_Response]:
        requests = aiter(request_iterator)
        try:
            first = await asyncio.wait_for(anext(requests, None), _OPEN_WAIT)
        except TimeoutError:
            raise invalid("open", f"the first message must come within {_OPEN_WAIT:g}s") from None
        if first is None or first.WhichOneof("kind") != "open":
            raise invalid("open", "the first message must be open")
        opening = first.open
        upstream = resolve(self._integrations, "websocket", opening.target)
        backend = upstream.backend
        headers = backend.check(opening.path, dict(opening.headers), list(opening.subprotocols))
        path, subprotocols, max_frame = opening.path, list(opening.subprotocols), self._max_frame
        session: BridgeSession = await call_through(
            upstream,
            context,
            lambda: backend.open(path, headers, subprotocols, max_frame=max_frame),
            deadline=call_deadline(context, self._integrations.clock),
        )
        self._open.add(session)
        bridge = _CallerSide(session, upstream, context)
        forward = asyncio.create_task(bridge.forward(requests), name="websocket-forward")
        try:
            yield _Response(opened=websocket_pb2.WebSocketOpened(subprotocol=session.subprotocol))
            while True:
                try:
                    frame = await session.receive()
                except SessionClosed as closed:
                    yield _Response(
                        closed=websocket_pb2.WebSocketClose(
                            code=closed.code, reason=closed.reason[:_MAX_REASON]
                        )
                    )
                    self._end(bridge, closed, upstream.name)
                    return
                if isinstance(frame, str):
                    yield _Response(frame=websocket_pb2.WebSocketFrame(text=frame))
                else:
                    yield _Response(frame=websocket_pb2.WebSocketFrame(binary=frame))
        finally:
            self._open.discard(session)
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await forward
            # Shielded: a cancelled call still closes its WebSocket before unwinding.
            await asyncio.shield(session.close(1001, "the caller went away"))

    def _end(self, bridge: _CallerSide, closed: SessionClosed, name: str) -> None:
        """Raise what ends the call after the upstream closed, if not OK."""
        if bridge.error is not None:
            raise bridge.error
        if closed.here and closed.code == 1009:
            raise ResourceExhausted(
                f"{name} sent a frame over max_frame_size: the WebSocket was closed (1009)",
                reason="VALUE_TOO_LARGE",
                metadata={"target": name, "close_code": "1009"},
            )
        if bridge.closing or self._ending:
            return  # the caller (or shutdown) asked for the close
        error = close_error(name, closed.code, closed.reason)
        if error is not None:
            raise error

    async def end_streams(self) -> None:
        """Close every open session (used at shutdown); their calls end with OK."""
        self._ending = True
        await asyncio.gather(
            *(session.close(1001, "sidecar shutting down") for session in list(self._open)),
            return_exceptions=True,
        )


class _CallerSide:
    """Forwards the caller's frames upstream; remembers a close it asked for, or the error
    its messages caused (the session is then closed, which ends the receiving side)."""

    def __init__(
        self, session: BridgeSession, upstream: Integration[Any], context: Context
    ) -> None:
        self._session = session
        self._context = context
        self._done = asyncio.Event()
        context.add_done_callback(self._call_done)  # type: ignore[arg-type]  # the stub wants its own class
        self._max_frame: int = upstream.settings.max_frame_size
        self.closing = False
        self.error: SidecarError | None = None

    def _call_done(self, context: Any) -> None:
        self._done.set()

    async def forward(self, requests: AsyncIterator[_Request]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("kind")
                if kind == "frame":
                    await self._session.send(self._frame(request.frame))
                elif kind == "close":
                    await self._close(request.close.code, request.close.reason)
                    return
                else:
                    raise invalid(kind or "kind", "only the first message may be open")
            # A cancelled call also ends the requests, and its cancellation lands just
            # after: wait a moment for it, so the upstream hears 1001 (going away) rather
            # than a planned 1000.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), _CANCEL_GRACE)
            if self._context.cancelled():  # not an end of its side: the caller went away
                await self._session.close(1001, "the caller went away")
            else:
                await self._close(1000, "")  # the caller ended its side
        except SessionClosed:
            return  # the receiving side reports the close
        except SidecarError as error:
            self.error = error
            code = 1009 if error.reason == "VALUE_TOO_LARGE" else 1008
            await self._session.close(code, "refused by the sidecar")

    def _frame(self, frame: websocket_pb2.WebSocketFrame) -> str | bytes:
        data: str | bytes = frame.text if frame.WhichOneof("data") == "text" else frame.binary
        if frame.WhichOneof("data") is None:
            raise invalid("frame", "set text or binary")
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        if size > self._max_frame:
            raise invalid(
                "frame", f"is {size} bytes; the limit is {self._max_frame}", "VALUE_TOO_LARGE"
            )
        return data

    async def _close(self, code: int, reason: str) -> None:
        if not (code == 1000 or 3000 <= code <= 4999):
            raise invalid("close.code", "must be 1000 or 3000-4999")
        if len(reason.encode()) > _MAX_REASON:
            raise invalid("close.reason", f"must be at most {_MAX_REASON} bytes")
        self.closing = True
        await self._session.close(code, reason)
