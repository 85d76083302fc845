"""Redis for the reliable-topic tests, built on `redis_server`: the shared server on
127.0.0.1:6379 when one answers there, else one `redis-server` started for this test process
(stopped at exit).

Plain functions rather than fixtures, so the subprocess tests can write the address into a
config file. Each test works under its own key prefix (`fresh_prefix`) and deletes it
afterwards (`delete_prefix`), so tests never see each other's streams.
"""

from __future__ import annotations

import atexit

import redis
from redis_server import SHARED, OwnedRedis, answers_ping, unique_prefix

__all__ = ["delete_prefix", "fresh_prefix", "redis_address"]

_address: tuple[str, int] | None = None


def redis_address() -> tuple[str, int]:
    """Host and port of a Redis to test against."""
    global _address  # noqa: PLW0603 - one server per test process
    if _address is None:
        if answers_ping(*SHARED):
            _address = SHARED
        else:
            server = OwnedRedis()
            server.start()
            atexit.register(server.kill)
            _address = ("127.0.0.1", server.port)
    return _address


def fresh_prefix() -> str:
    """A key prefix no other test uses."""
    return unique_prefix() + "streams:"


def delete_prefix(prefix: str) -> None:
    """Delete every key under `prefix`."""
    host, port = redis_address()
    client = redis.Redis(host=host, port=port)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
