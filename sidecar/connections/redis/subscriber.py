"""`SubscriberLink`: the one Redis connection of a `RedisConnection` that receives messages,
shared by every service on that connection: a broker's subscriptions and a cache's
invalidation channel (client-side caching) arrive on it alike.

It owns the connection's whole life: connecting (with its own CLIENT SETNAME), sending
(P)(UN)SUBSCRIBE and PING in order through one writer task, reading replies in one reader
task, and on any loss reconnecting with exponential backoff and jitter, then resubscribing
whatever its users still want. Each user works through a `SubscriberView`, which adds and
strips its own key prefix and receives the messages of the names it holds; a name two users
hold is subscribed once, and unsubscribed only when neither wants it any more.

Acknowledgements are tracked per channel or pattern. A SUBSCRIBE sent for a name is
"unacked" until Redis confirms it; `waiter(key)` is a future resolved once every SUBSCRIBE
sent for that name is confirmed, so a caller whose SUBSCRIBE follows an UNSUBSCRIBE of the
same name waits for its own confirmation, not the earlier one. On connection loss every
waiter fails with `Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis

from sidecar.connections.redis.client import map_redis_error
from sidecar.errors import SidecarError, Unavailable

__all__ = ["Key", "SubscriberLink", "SubscriberView"]

_log = logging.getLogger("sidecar.backends.redis")

Key = tuple[bool, str]
"""(is_pattern, name as the broker's users see it, without the key prefix)."""

_SUBSCRIBE = {False: "SUBSCRIBE", True: "PSUBSCRIBE"}
_UNSUBSCRIBE = {False: "UNSUBSCRIBE", True: "PUNSUBSCRIBE"}
_SUBSCRIBED = {b"subscribe": False, b"psubscribe": True}
_UNSUBSCRIBED = {b"unsubscribe": False, b"punsubscribe": True}
# Replies read before the reader lets other tasks run: read_response does not suspend while
# replies are already buffered, so a burst would hold the event loop until the socket is
# drained, and the streams delivering to subscribers (fed from their buffers) could not run
# meanwhile: their buffers would overflow and drop what they could have sent.
_READS_PER_TURN = 100


class SubscriberLink:
    """One subscriber connection, shared through `view`s.

    Args:
        client: the connection's client; the subscriber is made with its pool's settings.
        name: the connection name, for errors and logs.
        connection_name: CLIENT SETNAME of the connection.
        keepalive: seconds of silence before a PING; 3 silent periods mean a dead link.
        delays: (first, most) seconds between reconnection attempts.
    """

    def __init__(
        self,
        client: Redis,
        *,
        name: str,
        connection_name: str,
        keepalive: float,
        delays: tuple[float, float],
    ) -> None:
        self._client = client
        self._name = name
        self.connection_name = connection_name
        self._keepalive = keepalive
        self._delays = delays
        self._views: list[SubscriberView] = []
        self.client_id: int | None = None
        """CLIENT ID of the current connection (what CLIENT TRACKING ... REDIRECT names)."""
        self.up = False
        """Connected, and everything wanted has been (re)requested on the connection."""
        self.failure: BaseException | None = None
        """Why the last connection ended or could not be made; None once connected."""
        self.confirmed: set[Key] = set()
        """Wire names Redis has confirmed on the current connection (and not unsubscribed)."""
        self._task: asyncio.Task[None] | None = None
        self._outbox: list[tuple[str, Any]] = []
        self._outbox_ready = asyncio.Event()
        self._unacked: dict[Key, int] = {}
        self._waiting: dict[Key, asyncio.Future[None]] = {}
        self._pings: deque[asyncio.Future[None] | None] = deque()

    def view(
        self,
        *,
        prefixes: tuple[str, str] = ("", ""),
        wanted: Callable[[], Iterable[Key]],
        on_message: Callable[[Key, str, bytes], None],
        on_change: Callable[[], None] | None = None,
    ) -> SubscriberView:
        """A user's side of the link.

        Args:
            prefixes: (channel prefix, glob-escaped pattern prefix) added on the wire.
            wanted: what the user wants subscribed, in order (resubscribed after a
                reconnection); names as the user sees them.
            on_message: called with (key, channel, data) for every message of a name the
                user wants, both without the prefix.
            on_change: called when a name is confirmed and when the connection is lost.
        """
        view = SubscriberView(self, prefixes, wanted, on_message, on_change)
        self._views.append(view)
        return view

    def start(self) -> None:
        """Connect in the background (once); later calls do nothing."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=self.connection_name)

    async def close(self) -> None:
        """Disconnect for good; whoever waits gets `Unavailable(BACKEND_CLOSED)`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._lost(Unavailable("the Redis connection is closed", reason="BACKEND_CLOSED"))

    def subscribe(self, key: Key) -> None:
        """Send SUBSCRIBE (or PSUBSCRIBE) for the wire name `key` if connected; else the
        reconnection will."""
        if self.up:
            self._unacked[key] = self._unacked.get(key, 0) + 1
            self._send(_SUBSCRIBE[key[0]], key[1])

    def unsubscribe(self, key: Key) -> None:
        """Send UNSUBSCRIBE for the wire name `key` if connected and no view wants it."""
        if self.up and not any(key in view.wire_wanted() for view in self._views):
            self._send(_UNSUBSCRIBE[key[0]], key[1])

    def detach(self, view: SubscriberView) -> None:
        """Forget `view`, unsubscribing what only it wanted."""
        if view not in self._views:
            return
        held = view.wire_wanted()
        self._views.remove(view)
        for key in held:
            self.unsubscribe(key)

    def pending(self, key: Key) -> bool:
        """Whether `key` is not yet confirmed on a live connection."""
        return not self.up or key in self._unacked

    def waiter(self, key: Key) -> asyncio.Future[None]:
        """A future resolved once `key` is confirmed; failed if the connection is lost."""
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
        return future

    async def sync(self) -> None:
        """One PING round trip: every message Redis queued before it is then delivered."""
        if not self.up:
            return
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._send("PING", pong)
        await pong

    def _wanted(self) -> list[Key]:
        """Every wire name some view wants, once each, in order."""
        return list(dict.fromkeys(key for view in self._views for key in view.wire_wanted()))

    def _changed(self) -> None:
        for view in self._views:
            if view.on_change is not None:
                view.on_change()

    def _send(self, command: str, argument: Any) -> None:
        self._outbox.append((command, argument))
        self._outbox_ready.set()

    # -- the connection's life -----------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self._delays[0]
        while True:
            pool = self._client.connection_pool
            kwargs = {**pool.connection_kwargs, "client_name": self.connection_name}
            conn: Any = pool.connection_class(**{**kwargs, "socket_timeout": None})
            failure: BaseException
            try:
                await conn.connect()
                await conn.send_command("CLIENT", "ID")
                self.client_id = int(await conn.read_response())
                self.up, self.failure, delay = True, None, self._delays[0]
                for key in self._wanted():
                    self.subscribe(key)
                await self._serve(conn)
                failure = ConnectionError("the subscriber connection ended")
            except Exception as exc:
                failure = exc
            finally:
                self.up, self.client_id = False, None
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            self._lost(failure)
            _log.warning(
                "redis subscriber connection lost; reconnecting",
                extra={"integration": self._name, "error": repr(failure), "retry_in": delay},
            )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._delays[1])

    def _lost(self, failure: BaseException) -> None:
        """Forget the connection's state and fail whoever waits on it."""
        self.failure = failure
        error: SidecarError = map_redis_error(failure, self._name) or Unavailable(
            str(failure), reason="UPSTREAM_UNAVAILABLE", metadata={"target": self._name}
        )
        pongs = [
            *self._pings,
            *(argument for command, argument in self._outbox if command == "PING"),
        ]
        for future in [*self._waiting.values(), *pongs]:
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # marked retrieved: its waiter may be gone
        self._waiting.clear()
        self._pings.clear()
        self._unacked.clear()
        self.confirmed.clear()
        for view in self._views:
            view.confirmed.clear()
        self._outbox.clear()
        self._changed()

    async def _serve(self, conn: Any) -> None:
        reader = asyncio.create_task(self._read(conn))
        writer = asyncio.create_task(self._write(conn))
        try:
            done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        for task in done:
            if (error := task.exception()) is not None:
                raise error

    async def _write(self, conn: Any) -> None:
        while True:
            if not self._outbox:
                self._outbox_ready.clear()
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    async with asyncio.timeout(self._keepalive):
                        await self._outbox_ready.wait()
                except TimeoutError:
                    self._send("PING", None)
            batch, self._outbox = self._outbox, []
            # Pongs are matched to PINGs in sending order, and only this task sends.
            self._pings.extend(argument for command, argument in batch if command == "PING")
            for command, arguments in _grouped(batch):
                await conn.send_command(command, *arguments, check_health=False)

    async def _read(self, conn: Any) -> None:
        reads = 0
        while True:
            reply = await conn.read_response(timeout=self._keepalive * 3)
            reads += 1
            if reads % _READS_PER_TURN == 0:
                await asyncio.sleep(0)
            if not isinstance(reply, list):
                if reply == b"PONG":  # a PING while subscribed to nothing
                    self._pong()
                continue
            kind = reply[0]
            if kind == b"message":
                for view in self._views:
                    view.deliver(False, reply[1], reply[1], reply[2])
            elif kind == b"pmessage":
                for view in self._views:
                    view.deliver(True, reply[1], reply[2], reply[3])
            elif kind in _SUBSCRIBED:
                self._acked((_SUBSCRIBED[kind], _text(reply[1])))
            elif kind in _UNSUBSCRIBED and reply[1] is not None:
                key = (_UNSUBSCRIBED[kind], _text(reply[1]))
                self.confirmed.discard(key)
                for view in self._views:
                    view.unconfirmed(key)
            elif kind == b"pong":
                self._pong()

    def _acked(self, key: Key) -> None:
        self.confirmed.add(key)
        for view in self._views:
            view.confirm(key)
        self._changed()
        left = self._unacked.get(key, 0) - 1
        if left > 0:
            self._unacked[key] = left
            return
        self._unacked.pop(key, None)
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _pong(self) -> None:
        if self._pings:
            pong = self._pings.popleft()
            if pong is not None and not pong.done():
                pong.set_result(None)


class SubscriberView:
    """One user's side of a `SubscriberLink`: names as the user sees them (without its key
    prefix), the messages of the names it wants, and the link's state."""

    def __init__(
        self,
        link: SubscriberLink,
        prefixes: tuple[str, str],
        wanted: Callable[[], Iterable[Key]],
        on_message: Callable[[Key, str, bytes], None],
        on_change: Callable[[], None] | None,
    ) -> None:
        self._link = link
        self._prefixes = prefixes
        self._raw_prefixes = (prefixes[0].encode(), prefixes[1].encode())
        self._wanted = wanted
        self._on_message = on_message
        self.on_change = on_change
        self.confirmed: set[Key] = set()
        """Names (without prefix) Redis has confirmed on the current connection."""
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def connection_name(self) -> str:
        return self._link.connection_name

    @property
    def up(self) -> bool:
        return self._link.up

    @property
    def failure(self) -> BaseException | None:
        return self._link.failure

    @property
    def client_id(self) -> int | None:
        return self._link.client_id

    def start(self) -> None:
        self._link.start()

    async def sync(self) -> None:
        await self._link.sync()

    def close(self) -> None:
        """Stop receiving; names no other view wants are unsubscribed, and whoever waits on
        this view gets `Unavailable(BACKEND_CLOSED)`."""
        self._link.detach(self)
        closed = Unavailable("the service is closed", reason="BACKEND_CLOSED")
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_exception(closed)
                waiter.exception()  # marked retrieved: its waiter may be gone

    def subscribe(self, key: Key) -> None:
        self._link.subscribe(self._wire(key))

    def unsubscribe(self, key: Key) -> None:
        self._link.unsubscribe(self._wire(key))

    def pending(self, key: Key) -> bool:
        return self._link.pending(self._wire(key))

    def waiter(self, key: Key) -> asyncio.Future[None]:
        """A future resolved once `key` is confirmed; failed if the connection is lost or
        this view closes first."""
        shared = self._link.waiter(self._wire(key))
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(mine)
        mine.add_done_callback(self._waiters.discard)
        shared.add_done_callback(lambda done: _settle(mine, done))
        return mine

    def wire_wanted(self) -> list[Key]:
        return [self._wire(key) for key in self._wanted()]

    def _wire(self, key: Key) -> Key:
        return (key[0], self._prefixes[key[0]] + key[1])

    def _local(self, key: Key) -> Key | None:
        prefix = self._prefixes[key[0]]
        return (key[0], key[1][len(prefix) :]) if key[1].startswith(prefix) else None

    def confirm(self, key: Key) -> None:
        local = self._local(key)
        if local is not None:
            self.confirmed.add(local)

    def unconfirmed(self, key: Key) -> None:
        local = self._local(key)
        if local is not None:
            self.confirmed.discard(local)

    def deliver(self, is_pattern: bool, name: bytes, channel: bytes, data: bytes) -> None:
        """Hand one message to the user if its name and channel carry the user's prefixes."""
        name_prefix, channel_prefix = self._raw_prefixes[is_pattern], self._raw_prefixes[0]
        if not (name.startswith(name_prefix) and channel.startswith(channel_prefix)):
            return
        key = (is_pattern, name[len(name_prefix) :].decode("utf-8", "replace"))
        self._on_message(key, channel[len(channel_prefix) :].decode("utf-8", "replace"), data)


def _settle(mine: asyncio.Future[None], shared: asyncio.Future[None]) -> None:
    """Pass the shared waiter's outcome on to one view's waiter (unless it closed first)."""
    error = None if shared.cancelled() else shared.exception()
    if mine.done():
        return
    if shared.cancelled():
        mine.cancel()
    elif error is not None:
        mine.set_exception(error)
    else:
        mine.set_result(None)


def _text(wire: bytes) -> str:
    return wire.decode("utf-8", "replace")


def _grouped(batch: list[tuple[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Consecutive (P)(UN)SUBSCRIBEs of one kind merged into one command; PINGs alone."""
    commands: list[tuple[str, list[Any]]] = []
    for command, argument in batch:
        if command == "PING":
            commands.append((command, []))
        elif commands and commands[-1][0] == command:
            commands[-1][1].append(argument)
        else:
            commands.append((command, [argument]))
    return commands
