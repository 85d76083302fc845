"""Real Redis servers for tests: the shared one on 127.0.0.1:6379, or one the tests start.

`redis_address` (session fixture) is the shared server when it answers PING, else a
`redis-server` this session starts on a free port and stops at the end. `OwnedRedis` is a
server one test owns outright, so it may kill and restart it (fault tests never touch the
shared one). `unique_prefix()` gives each test its own key/channel namespace.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

SHARED = ("127.0.0.1", 6379)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at host:port (plain socket: no client needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def unique_prefix() -> str:
    """A key prefix no other test uses (hex and ':' only: no glob characters)."""
    return f"t:{uuid.uuid4().hex[:12]}:"


class OwnedRedis:
    """A `redis-server` subprocess without persistence, on a port that survives restarts."""

    def __init__(self, port: int | None = None, *extra_args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", *self.extra_args]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._listening():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        if not self.extra_args:
            return answers_ping("127.0.0.1", self.port)
        try:  # PING may need AUTH: any answer will do
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture(scope="session")
def redis_address() -> Iterator[tuple[str, int]]:
    """(host, port) of a Redis server every test of the session may use."""
    if answers_ping(*SHARED):
        yield SHARED
        return
    server = OwnedRedis()
    server.start()
    try:
        yield ("127.0.0.1", server.port)
    finally:
        server.kill()


@pytest.fixture
def key_prefix() -> str:
    """A key and channel prefix of the test's own."""
    return unique_prefix()


@pytest.fixture
async def redis_client(
    redis_address: tuple[str, int], key_prefix: str
) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client on the test server, for looking behind the sidecar's back;
    the test's keys are deleted afterwards."""
    client = aioredis.Redis(host=redis_address[0], port=redis_address[1])
    yield client
    keys = await client.keys(key_prefix + "*")
    if keys:
        await client.delete(*keys)
    await client.aclose()
