"""One GraphQL subscription over the `graphql-transport-ws` protocol (the one graphql-ws,
Apollo Server, Hasura, strawberry and ariadne speak), on a WebSocket of its own.

    client -> connection_init {payload}        server -> connection_ack
    client -> subscribe {id, payload}          server -> next {id, payload} ...
                                               server -> complete {id} | error {id, payload}
    either -> ping / pong                      client -> complete {id} (to stop)

`start` opens the WebSocket, initialises it (with the configured payload and credentials)
and subscribes; `events` yields each `next` payload in order, ends after `complete` (or an
`error`, yielded as a last result with errors), answers pings, and when the WebSocket closes
first either reconnects with backoff (when configured, yielding `Reconnected`) or raises the
close mapped to an error. `close` sends `complete` when the operation still runs, then
closes the WebSocket with 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sidecar.backends.graphql.base import (
    OFF_LOOP_JSON_BYTES,
    GraphQLErrorInfo,
    GraphQLResult,
    Reconnected,
    SubscriptionEvent,
    result_from,
)
from sidecar.connections.websocket import close_error, close_session
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)
from sidecar.resilience import Clock

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = ["PROTOCOL", "ReconnectPolicy", "TransportWsSubscription", "close_error_of"]

PROTOCOL: Final = "graphql-transport-ws"
_OPERATION_ID: Final = "1"
_NO_RECONNECT: Final = frozenset({4400, 4401, 4403, 4406, 4409, 4429})
"""Closes that another attempt would meet again (bad request, credentials, protocol)."""


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """When and how fast a subscription reconnects."""

    enabled: bool = False
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        """Full-jitter exponential backoff before reconnection number `attempt`."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return float(draw()) * ceiling


def close_error_of(upstream: str, code: int, reason: str) -> SidecarError:
    """The error a subscription's WebSocket closing before `complete` ends the call with."""
    metadata = {"target": upstream, "close_code": str(code), "close_reason": reason[:123]}
    said = f" ({reason})" if reason else ""
    if code in (4401, 4403):
        return FailedPrecondition(
            f"{upstream} rejected the sidecar's credentials (close {code})",
            reason="UPSTREAM_AUTH_FAILED",
            metadata=metadata,
        )
    if code == 4400:
        return InvalidArgument(
            f"{upstream} refused the subscription (close 4400){said}",
            reason="UPSTREAM_REJECTED",
            metadata=metadata,
        )
    if code == 4406:
        return FailedPrecondition(
            f"{upstream} does not speak {PROTOCOL} (close 4406)",
            reason="UPSTREAM_REJECTED",
            metadata=metadata,
        )
    if code == 4429:
        return ResourceExhausted(
            f"{upstream} is rate limiting the sidecar (close 4429){said}",
            reason="UPSTREAM_RATE_LIMITED",
            metadata=metadata,
        )
    mapped = close_error(upstream, code, reason)
    if mapped is not None:
        return mapped
    return Unavailable(  # 1000 or an application code, but before `complete`
        f"{upstream} closed the subscription's WebSocket with {code}{said} before completing",
        reason="STREAM_INTERRUPTED",
        metadata=metadata,
    )


def _protocol_error(upstream: str, detail: str) -> Unavailable:
    return Unavailable(
        f"{upstream} broke the {PROTOCOL} protocol: {detail}",
        reason="UPSTREAM_UNAVAILABLE",
        metadata={"target": upstream, "upstream_status": "protocol"},
    )


class TransportWsSubscription:
    """One running subscription.

    Args:
        upstream: The service's name (errors carry it as `target`).
        open_socket: Opens a WebSocket offering the protocol (mapped handshake errors).
        init_payload: The connection_init payload.
        operation: The subscribe payload (query, variables, operationName).
        init_timeout: The wait for connection_ack.
        reconnect: The reconnection policy.
        clock: Sleeps of the backoff.
    """

    def __init__(
        self,
        upstream: str,
        open_socket: Callable[[], Awaitable[ClientConnection]],
        *,
        init_payload: Mapping[str, Any],
        operation: Mapping[str, Any],
        init_timeout: float,
        reconnect: ReconnectPolicy,
        clock: Clock,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self._upstream = upstream
        self._open_socket = open_socket
        self._init = json.dumps({"type": "connection_init", "payload": dict(init_payload)})
        self._subscribe = json.dumps(
            {"id": _OPERATION_ID, "type": "subscribe", "payload": dict(operation)}
        )
        self._init_timeout = init_timeout
        self._reconnect = reconnect
        self._clock = clock
        self._on_close = on_close
        self._socket: ClientConnection | None = None
        self._done = False
        self._closed = False

    @property
    def socket(self) -> ClientConnection | None:
        """The WebSocket in use (None before `start` and after `close`)."""
        return self._socket

    async def start(self) -> None:
        """Open, initialise and subscribe.

        Raises:
            SidecarError: the handshake failed, the upstream closed or did not acknowledge.
        """
        self._socket = await self._connect()

    async def _connect(self) -> ClientConnection:
        from websockets.exceptions import ConnectionClosed

        socket = await self._open_socket()
        try:
            if socket.subprotocol != PROTOCOL:
                raise FailedPrecondition(
                    f"{self._upstream} does not speak {PROTOCOL} (it chose "
                    f"{socket.subprotocol or 'no subprotocol'})",
                    reason="UPSTREAM_REJECTED",
                    metadata={"target": self._upstream},
                )
            await socket.send(self._init)
            try:
                async with asyncio.timeout(self._init_timeout):
                    await self._await_ack(socket)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"{self._upstream} did not acknowledge connection_init within "
                    f"{self._init_timeout:g}s",
                    reason="DEADLINE_EXCEEDED",
                    metadata={"target": self._upstream, "upstream_status": "timeout"},
                ) from None
            await socket.send(self._subscribe)
        except ConnectionClosed as exc:
            code, reason = _close_of(exc)
            raise close_error_of(self._upstream, code, reason) from None
        except BaseException:
            await asyncio.shield(_abort(socket))
            raise
        return socket

    async def _await_ack(self, socket: ClientConnection) -> None:
        while True:
            message = self._decode(await socket.recv())
            kind = message.get("type")
            if kind == "connection_ack":
                return
            if kind == "ping":
                await socket.send('{"type":"pong"}')
            elif kind != "pong":
                raise _protocol_error(self._upstream, f"{kind!r} before connection_ack")

    async def events(self) -> AsyncIterator[SubscriptionEvent]:
        """Each event in order, until `complete`, an `error`, or a failure (raised)."""
        from websockets.exceptions import ConnectionClosed

        attempts = 0
        while not self._done:
            socket = self._socket
            if socket is None:
                return
            try:
                raw = await socket.recv()
            except ConnectionClosed as exc:
                if self._closed:
                    return
                code, reason = _close_of(exc)
                if not self._may_reconnect(code, attempts):
                    raise close_error_of(self._upstream, code, reason) from None
                attempts += 1
                await self._reconnect_after(code, attempts)
                yield Reconnected(attempts, code)
                continue
            large = len(raw) > OFF_LOOP_JSON_BYTES
            message = await asyncio.to_thread(self._decode, raw) if large else self._decode(raw)
            kind = message.get("type")
            if kind == "ping":
                await socket.send('{"type":"pong"}')
                continue
            if kind == "pong":
                continue
            event = await asyncio.to_thread(self._event, message) if large else self._event(message)
            if event is not None:
                yield event

    def _may_reconnect(self, code: int, attempts: int) -> bool:
        return (
            self._reconnect.enabled
            and attempts < self._reconnect.max_attempts
            and code not in _NO_RECONNECT
        )

    async def _reconnect_after(self, code: int, attempt: int) -> None:
        """Open the WebSocket again after a backoff; each failed try counts as an attempt.

        Raises:
            SidecarError: the last attempt failed too.
        """
        while True:
            await self._clock.sleep(self._reconnect.delay(attempt))
            try:
                socket = await self._connect()
            except SidecarError as error:
                if not error.transient or attempt >= self._reconnect.max_attempts:
                    raise
                attempt += 1
                continue
            if self._closed:  # closed (cancelled, shutdown) while reconnecting
                await _abort(socket, 1000)
            else:
                self._socket = socket
            return

    def _event(self, message: Mapping[str, Any]) -> GraphQLResult | None:
        kind = message.get("type")
        if message.get("id") != _OPERATION_ID:
            raise _protocol_error(self._upstream, f"{kind!r} for an unknown operation")
        if kind == "next":
            payload = message.get("payload")
            if not isinstance(payload, Mapping):
                raise _protocol_error(self._upstream, "next without a payload object")
            return result_from(payload, 0, self._upstream)
        if kind == "complete":
            self._done = True
            return None
        if kind == "error":
            self._done = True
            errors = message.get("payload")
            result = result_from(
                {"errors": errors if isinstance(errors, list) else []}, 0, self._upstream
            )
            return (
                result
                if result.errors
                else GraphQLResult(
                    errors=(GraphQLErrorInfo("the upstream refused the subscription"),)
                )
            )
        raise _protocol_error(self._upstream, f"unexpected message {kind!r}")

    def _decode(self, raw: str | bytes) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except ValueError:
            raise _protocol_error(self._upstream, "a message is not JSON") from None
        if not isinstance(message, dict):
            raise _protocol_error(self._upstream, "a message is not a JSON object")
        return message

    async def close(self) -> None:
        """Stop: send `complete` if the operation still runs, then close with 1000.
        Idempotent; never raises."""
        if self._closed:
            return
        self._closed = True
        socket, self._socket = self._socket, None
        try:
            if socket is not None:
                if not self._done:
                    with contextlib.suppress(Exception):  # already closed: nothing to tell
                        await socket.send(json.dumps({"id": _OPERATION_ID, "type": "complete"}))
                await _abort(socket, 1000)
        finally:
            self._on_close()


def _close_of(exc: Any) -> tuple[int, str]:
    """(code, reason) of a `ConnectionClosed`: the close frame received, else 1006."""
    received = exc.rcvd
    if received is None:
        return 1006, ""
    return int(received.code), str(received.reason)


async def _abort(socket: ClientConnection, code: int = 1011) -> None:
    await close_session(socket, code)
