"""A fault-injecting TCP proxy for tests (the toxiproxy pattern), in plain asyncio.

Put it between the sidecar and a real server, then break the network on purpose without
touching the server, which other tests share:

    async with FaultProxy("127.0.0.1", 5432) as proxy:
        dsn = f"postgresql://postgres@{proxy.host}:{proxy.port}/app"   # point the client here
        proxy.latency = 0.2          # every chunk waits 200 ms, both ways
        proxy.rate = 1_000_000       # bytes per second, per connection and direction
        proxy.paused = True          # bytes stop flowing (a silent partition) until False
        await proxy.cut()            # reset every open connection (RST), like a dead link
        await proxy.stop_accepting() # new connections are refused (ECONNREFUSED) ...
        proxy.resetting = True       # ... or accepted and reset at once (a dead link)
        await proxy.start_accepting()  # ... until the port listens again
        proxy.connections, proxy.accepted   # open now, accepted in total

Switches act at once on open connections and on new ones. The proxy listens on
127.0.0.1 and a free port unless told otherwise; `start_accepting` binds the same port
again. It holds no global state, so several proxies can run side by side. Not for
production: no TLS awareness, chunks of up to 64 KiB, latency added per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

__all__ = ["FaultProxy"]

_CHUNK = 65_536


class _Link:
    """One proxied connection: the client's and the upstream's streams and their pumps."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()  # RST, not a polite FIN
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forward TCP connections to `target_host:target_port`, with fault switches.

    Args:
        target_host: where to forward to.
        target_port: the target's port.
        listen_host: the proxy's address. Default 127.0.0.1.
        listen_port: the proxy's port; 0 picks a free one (see `port`). Default 0.

    Attributes:
        latency: seconds each chunk waits before it is forwarded, in both directions.
        rate: bytes per second each connection forwards in each direction (None: no limit).
        resetting: while True, every new connection is accepted and reset (RST) at once.
        paused: while True, nothing is forwarded (the bytes wait, nothing is lost).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = listen_host
        self.port = listen_port
        self.latency = 0.0
        self.rate: float | None = None
        self.resetting = False
        self.accepted = 0
        self._resume = asyncio.Event()
        self._resume.set()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """`host:port` of the proxy."""
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open through the proxy right now."""
        return len(self._links)

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    @paused.setter
    def paused(self, value: bool) -> None:
        if value:
            self._resume.clear()
        else:
            self._resume.set()

    async def __aenter__(self) -> FaultProxy:
        await self.start_accepting()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start_accepting(self) -> None:
        """Listen (again, on the same port once one was picked)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_accepting(self) -> None:
        """Stop listening: new connections are refused; open ones keep flowing."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def cut(self) -> int:
        """Reset every open connection at once; returns how many there were."""
        links = list(self._links)
        self._links.clear()
        for link in links:
            link.abort()
        await asyncio.sleep(0)  # let the pumps see their cancellation
        return len(links)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        self._resume.set()
        await self.stop_accepting()
        await self.cut()
        # Handlers end by themselves once their links are cut (cancelling them would make
        # asyncio log the cancellation); one still connecting upstream gets a moment.
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.resetting:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                writer.transport.abort()
                return
            link = _Link(writer, up_writer)
            self._links.add(link)
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
            self._links.discard(link)
            for side in (writer, up_writer):
                side.close()
        finally:
            self._handlers.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        free_at = loop.time()  # when this direction may send again, at `rate`
        try:
            while chunk := await reader.read(_CHUNK):
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                if self.rate:
                    free_at = max(free_at, loop.time()) + len(chunk) / self.rate
                    await asyncio.sleep(free_at - loop.time())
                await self._resume.wait()
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # pass the half-close on
        except (ConnectionError, OSError):
            with contextlib.suppress(Exception):
                writer.transport.abort()
