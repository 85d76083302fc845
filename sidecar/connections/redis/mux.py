"""`Multiplexer`: one Redis connection shared by every concurrent caller, auto-pipelined.

Why it exists: in this sidecar the Python gRPC hop is the ceiling, so each microsecond a
call spends in the client library shows in throughput. redis-py's per-command path (pool
checkout under a lock, retry wrapper, observability hooks, a timeout context per read)
added ~100-170 µs of server CPU per Cache.Get over the in-memory cache in `make bench`;
through the multiplexer the difference is ~30-60 µs, about the cost of the two syscalls and
the event-loop wakeup any network round trip needs. It does what StackExchange.Redis,
Lettuce and ioredis's auto-pipelining do: commands from all callers go out on one
connection in order, every command queued during one event-loop turn leaves in one write,
and replies, which Redis sends in the same order, resolve the callers' futures FIFO as they
are parsed (hiredis, in C). A call costs one packed command and one future. The price: a
large reply (a 1 MiB value) delays the replies queued behind it, by about its transfer time.

It serves single commands only: no blocking commands (BLPOP would stall every caller), no
MULTI/EXEC, no SUBSCRIBE; those stay on the redis-py pool. Failures raise redis-py's own
exception types, so `redis_errors` maps them like any other:

- connection refused, reset or lost: `redis.exceptions.ConnectionError` for every command in
  flight (it may or may not have run: only the pipeline's idempotency rules may retry it);
  the next call reconnects, concurrent callers sharing one attempt;
- no reply for `read_timeout` while commands are in flight: the connection is dropped and
  they fail with `redis.exceptions.TimeoutError`;
- an error reply: `redis.exceptions.ResponseError` for that command only.

A caller cancelled while waiting (its deadline passed) simply abandons its future: the
reply is still read, in order, and dropped. Matching replies by order alone trusts that no
byte is ever lost inside the connection; plain TCP guarantees that, but a faulty proxy or
middlebox may not, and after one lost reply every later reply would resolve the wrong
caller. So once a caller has abandoned a command (the oldest command in flight was given
up, or an abandoned command's reply was just dropped), the next write is prefixed with
`ECHO <nonce>`; its reply must be the nonce. Anything else means replies and callers are out
of step: a warning is logged, every command in flight fails with
`redis.exceptions.ConnectionError`, and the next call reconnects. With nothing abandoned
this costs one check per write.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import hiredis
from redis import exceptions as rex
from redis.asyncio import Redis, SSLConnection

__all__ = ["Multiplexer"]

_log = logging.getLogger("sidecar.backends.redis")


class _Link(asyncio.Protocol):
    """One connection: queued writes flushed once per loop turn, replies matched FIFO."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.on_lost: Callable[[], None] | None = None
        """Called once, when the connection closes for any reason."""
        self._reader = hiredis.Reader(
            replyError=rex.ResponseError, protocolError=rex.InvalidResponse
        )
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._pending: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self.closed = False
        self.last_reply = time.monotonic()
        # Alignment checks (see the module docstring): the ECHO in flight, and what it says.
        self._probe: asyncio.Future[Any] | None = None
        self._nonce = b""
        self._nonce_prefix = b"sidecar-align:" + os.urandom(8).hex().encode()
        self._probes_sent = 0
        self._suspect = False
        """An abandoned command's reply was dropped since the last ECHO was sent."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's does not subclass asyncio.Transport, hence no check.
        self._transport = cast(asyncio.Transport, transport)

    def call(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        if not self._waiters:  # idle until now: the read timeout counts from here
            self.last_reply = time.monotonic()
        self._waiters.append(future)
        self._pending.append(hiredis.pack_command(args))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def in_flight(self) -> int:
        return len(self._waiters)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if self._transport is not None and not self.closed:
            waiters = self._waiters
            if self._probe is None and (self._suspect or (waiters and waiters[0].done())):
                self._probe_ahead_of(pending)
            self._transport.write(b"".join(pending))

    def _probe_ahead_of(self, pending: list[bytes]) -> None:
        """Send `ECHO <nonce>` before the `pending` commands: its reply must be the nonce.

        The probe's future is resolved from the start, so `data_received` looks for it only
        among done futures, the rare branch it already takes for abandoned commands.
        """
        self._probes_sent += 1
        self._nonce = b"%s:%d" % (self._nonce_prefix, self._probes_sent)
        probe = self._probe = self._loop.create_future()
        probe.set_result(None)
        self._waiters.insert(len(self._waiters) - len(pending), probe)
        echo: tuple[Any, ...] = ("ECHO", self._nonce)
        pending.insert(0, hiredis.pack_command(echo))
        self._suspect = False

    def data_received(self, data: bytes) -> None:
        reader, waiters = self._reader, self._waiters
        reader.feed(data)
        self.last_reply = time.monotonic()
        try:
            while (reply := reader.gets()) is not False:
                if not waiters:
                    raise rex.InvalidResponse("a reply nobody asked for")
                future = waiters.popleft()
                if future.done():  # the alignment probe, or a command its caller gave up
                    if future is not self._probe:
                        self._suspect = True  # dropped: was it really that command's reply?
                    elif reply == self._nonce:
                        self._probe = None
                    else:
                        self._misaligned()
                        return
                    continue
                if isinstance(reply, rex.ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except rex.InvalidResponse as exc:
            self.abort(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(rex.ConnectionError(f"connection to Redis lost ({exc or 'closed'})"))

    def _misaligned(self) -> None:
        _log.warning(
            "Redis replies are out of step with their commands (bytes were lost inside the "
            "connection); resetting it"
        )
        self.abort(rex.ConnectionError("Redis replies were out of order; connection reset"))

    def abort(self, error: Exception) -> None:
        """Drop the connection; every command in flight fails with `error`."""
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: Exception) -> None:
        if not self.closed and self.on_lost is not None:
            self.on_lost()
        self.closed = True
        waiters, self._waiters = self._waiters, collections.deque()
        for future in waiters:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: its caller may be gone


class Multiplexer:
    """A pipelined connection made with a redis-py client's settings (see module docstring).

    Args:
        client: its pool's connection settings (host, port, db, username, password, TLS,
            client name, connect and read timeouts) are used; the client itself is not.
        on_up: called once a new connection has passed its handshake.
        on_down: called once when a connection that was up is lost or closed.

    Usage:

        mux = Multiplexer(client)
        value = await mux.call("GET", "user:1")
    """

    def __init__(
        self,
        client: Redis,
        *,
        on_up: Callable[[], None] | None = None,
        on_down: Callable[[], None] | None = None,
    ) -> None:
        self._on_up = on_up
        self._on_down = on_down
        pool = client.connection_pool
        kwargs: dict[str, Any] = pool.connection_kwargs
        self._host: str = kwargs.get("host", "localhost")
        self._port: int = int(kwargs.get("port", 6379))
        self._tls = (
            _tls_context(kwargs) if issubclass(pool.connection_class, SSLConnection) else None
        )
        # tls.server_name: the name the certificate is checked against, instead of the host
        self._server_name: str | None = getattr(pool.connection_class, "server_name", None)
        self._handshake: list[tuple[Any, ...]] = []
        password, username = kwargs.get("password"), kwargs.get("username")
        if password is not None:
            self._handshake.append(("AUTH", username, password) if username else ("AUTH", password))
        if kwargs.get("db"):
            self._handshake.append(("SELECT", kwargs["db"]))
        if kwargs.get("client_name"):
            self._handshake.append(("CLIENT", "SETNAME", kwargs["client_name"]))
        self._connect_timeout: float | None = kwargs.get("socket_connect_timeout")
        self._read_timeout: float | None = kwargs.get("socket_timeout")
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    def call(self, *args: Any) -> Awaitable[Any]:
        """Send one command; the awaitable gives its reply (RESP2, bytes, as hiredis reads it)."""
        link = self._link
        if link is None or link.closed:
            return self._call_after_connect(args)
        if self._watchdog is None and self._read_timeout:
            self._arm_watchdog(link)
        return link.call(args)

    @property
    def connected(self) -> bool:
        """Whether a connection is up (past its handshake) right now."""
        return self._link is not None and not self._link.closed

    async def aclose(self) -> None:
        """Close the connection; commands in flight fail with ConnectionError. Idempotent."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._link is not None:
            self._link.abort(rex.ConnectionError("the Redis client is closed"))
            self._link = None

    async def _call_after_connect(self, args: tuple[Any, ...]) -> Any:
        if self._closed:
            raise rex.ConnectionError("the Redis client is closed")
        task = self._connecting
        if task is None or task.done():  # concurrent callers share one attempt
            task = self._connecting = asyncio.create_task(self._connect())
            task.add_done_callback(_retrieve)
        try:
            await asyncio.shield(task)  # a caller giving up does not cancel the others' attempt
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                raise rex.ConnectionError("the Redis client is closed") from None  # by aclose
            raise
        return await self.call(*args)

    async def _connect(self) -> _Link:
        """Open a connection and run the handshake; errors as redis-py's exception types."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                link = await self._open()
        except TimeoutError as exc:
            raise rex.TimeoutError(f"connecting to Redis timed out ({exc})") from exc
        except rex.ResponseError as exc:
            raise rex.AuthenticationError(f"Redis refused the connection setup: {exc}") from exc
        except OSError as exc:
            raise rex.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        if self._closed:
            link.abort(rex.ConnectionError("the Redis client is closed"))
            raise rex.ConnectionError("the Redis client is closed")
        self._link = link
        if not link.closed:
            link.on_lost = self._on_down
            if self._on_up is not None:
                self._on_up()
        return link

    async def _open(self) -> _Link:
        loop = asyncio.get_running_loop()
        context = self._tls
        _, link = await loop.create_connection(
            lambda: _Link(loop),
            self._host,
            self._port,
            ssl=context,
            server_hostname=self._server_name if context is not None else None,
        )
        try:  # AUTH, SELECT and CLIENT SETNAME pipelined; each must succeed
            replies = [link.call(command) for command in self._handshake]
            # Every reply is awaited, so none is left unretrieved when an early one fails
            # (a wrong password fails AUTH and, with NOAUTH, the commands after it).
            outcomes = await asyncio.gather(*replies, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        except BaseException:
            link.abort(rex.ConnectionError("the connection setup failed"))
            raise
        return link

    def _arm_watchdog(self, link: _Link) -> None:
        """Check `link` for progress in `read_timeout` seconds."""
        assert self._read_timeout is not None
        self._watchdog = asyncio.get_running_loop().call_later(
            self._read_timeout, self._check, link
        )

    def _check(self, link: _Link) -> None:
        """Drop a connection that has commands in flight but sent nothing for too long."""
        self._watchdog = None
        if link.closed or not link.in_flight():
            return
        assert self._read_timeout is not None
        if time.monotonic() - link.last_reply >= self._read_timeout:
            link.abort(rex.TimeoutError(f"no reply from Redis for {self._read_timeout:g}s"))
        else:
            self._arm_watchdog(link)


def _tls_context(kwargs: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context of the pool's `ssl_*` settings, so the multiplexed link trusts and
    presents exactly what the pool's connections do."""
    context = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
    if kwargs.get("ssl_certfile"):
        context.load_cert_chain(kwargs["ssl_certfile"], kwargs.get("ssl_keyfile"))
    if kwargs.get("ssl_cert_reqs") == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _retrieve(task: asyncio.Task[_Link]) -> None:
    """Mark a connection attempt's error as seen: every caller may have given up on it."""
    if not task.cancelled():
        task.exception()
