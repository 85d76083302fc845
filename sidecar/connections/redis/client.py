"""What every Redis-backed backend shares: building the client, and mapping its errors.

Usage:

    client = create_client(settings, max_connections=20, client_name="sidecar:cache")
    errors = redis_errors("cache")          # build once, reuse on every call
    with errors:
        value = await client.execute_command("GET", key)

`create_client` makes one `redis.asyncio.Redis` over one connection pool per service
instance. Its choices, and why:

- A *blocking* pool of `max_connections`: a burst of calls beyond the pool waits up to
  `acquire_timeout` for a free connection, like every other upstream pool of the sidecar,
  instead of failing at once with "Too many connections".
- No retries inside redis-py: the resilience pipeline owns retries, and it knows which
  operations are idempotent; a retry in redis-py would re-send an INCRBY that may have run.
  A pooled connection that died (say Redis restarted) is still replaced before use, because
  redis-py checks a connection when it leaves the pool.
- RESP2 (`protocol=2`): understood by every Redis and Redis-compatible server a deployment
  may point at (Redis 5, managed services, KeyDB, Valkey), where RESP3 needs Redis 6+.
- Raw bytes out (`decode_responses=False`): values are opaque bytes in every contract.

Redis is imported when this module is, so only backends that are configured pay for it.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redis import exceptions as rex
from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sidecar.connections._mapped_errors import MappedErrors
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)

if TYPE_CHECKING:
    from sidecar.config import RedisEndpoint

__all__ = [
    "RedisErrors",
    "create_client",
    "glob_escape",
    "map_redis_error",
    "redis_errors",
]


def create_client(
    settings: RedisEndpoint,
    *,
    max_connections: int = 10,
    acquire_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    socket_timeout: float | None = 30.0,
    client_name: str | None = None,
) -> Redis:
    """A Redis client with its own connection pool; no network I/O happens here.

    Args:
        settings: host, port, database, username, password, tls of a redis connection (or
            of a `backend: redis` service's inline settings).
        max_connections: pool size, from the connection's `connection_pool.max_connections`.
        acquire_timeout: how long a call waits for a free pooled connection.
        connect_timeout: limit on opening one connection (`timeouts.connect`).
        socket_timeout: limit on waiting for one reply (`timeouts.read`); None waits forever.
        client_name: sent with CLIENT SETNAME on every connection, so operators can tell
            the sidecar's connections apart in `CLIENT LIST`.

    Returns:
        A client whose `aclose()` also closes its pool.
    """
    # An empty password (an unset ${VAR:-}) means no AUTH, as with redis-cli.
    password = settings.password.get_secret_value() if settings.password is not None else None
    password = password or None
    tls = settings.tls
    tls_options: dict[str, Any] = {}
    if tls.enabled:
        tls_options = {
            "ssl_ca_certs": str(tls.ca_file) if tls.ca_file else None,
            "ssl_certfile": str(tls.cert_file) if tls.cert_file else None,
            "ssl_keyfile": str(tls.key_file) if tls.key_file else None,
            "ssl_cert_reqs": "required" if tls.verify else "none",
            "ssl_check_hostname": tls.verify,
        }
    connection_class: type[Connection] = Connection
    if tls.enabled:
        connection_class = (
            _named_tls_connection(tls.server_name) if tls.server_name else SSLConnection
        )
    pool = BlockingConnectionPool(
        connection_class=connection_class,
        max_connections=max_connections,
        timeout=acquire_timeout,
        host=settings.host,
        port=settings.port,
        db=settings.database,
        username=settings.username,
        password=password,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        client_name=client_name,
        protocol=2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
        **tls_options,
    )
    return Redis.from_pool(pool)


def _named_tls_connection(name: str) -> type[SSLConnection]:
    """An `SSLConnection` that checks (and sends as SNI) `name` instead of the host; the
    multiplexer reads `server_name` off the pool's class to do the same."""

    class NamedTlsConnection(SSLConnection):
        server_name = name

        def _connection_arguments(self) -> Mapping[str, Any]:
            return {**super()._connection_arguments(), "server_hostname": name}

    return NamedTlsConnection


def glob_escape(text: str) -> str:
    """`text` with the Redis glob characters (`* ? [ ] \\`) escaped, to prefix a pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def map_redis_error(exc: BaseException, target: str) -> SidecarError | None:
    """The sidecar error for an exception raised by redis-py, or None if it is not one.

    Transient trouble (connection lost or refused, server loading, failover) becomes
    `Unavailable`, which the pipeline retries and the breaker counts; a reply timeout becomes
    `DeadlineExceeded`; Redis's answers about the data (WRONGTYPE, not an integer, overflow)
    become `FailedPrecondition` with the stable reasons of the cache contract.
    """
    metadata: Mapping[str, str] = {"target": target}
    if isinstance(exc, rex.TimeoutError | builtins.TimeoutError):
        return DeadlineExceeded(
            "Redis did not answer in time", reason="DEADLINE_EXCEEDED", metadata=metadata
        )
    if isinstance(exc, rex.ConnectionError | builtins.ConnectionError | OSError):
        # BusyLoadingError and AuthenticationError are ConnectionErrors too. Only the class
        # name is shown: the text of a connection error may carry the address.
        return Unavailable(
            f"Redis is unavailable ({type(exc).__name__})",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
        )
    if isinstance(exc, rex.ResponseError):
        return _response_error(str(exc), metadata)
    if isinstance(exc, rex.RedisError):  # a broken reply, a closed connection...
        return Unavailable(
            f"Redis client error ({type(exc).__name__})",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
        )
    return None


# Error replies that mean "try again soon", by their first word.
_TRANSIENT_CODES = frozenset({"READONLY", "MASTERDOWN", "LOADING", "TRYAGAIN", "CLUSTERDOWN"})


def _response_error(text: str, metadata: Mapping[str, str]) -> SidecarError:
    code = text.split(" ", 1)[0]
    if code == "WRONGTYPE":
        return FailedPrecondition(
            "the key holds a value of another type", reason="WRONG_TYPE", metadata=metadata
        )
    if "not an integer" in text:
        return FailedPrecondition(
            "the value is not an integer or out of the int64 range",
            reason="NOT_AN_INTEGER",
            metadata=metadata,
        )
    if "overflow" in text:
        return FailedPrecondition(
            "the increment would overflow the int64 range",
            reason="INTEGER_OVERFLOW",
            metadata=metadata,
        )
    if code == "OOM":
        return ResourceExhausted(
            "Redis is out of memory (maxmemory reached)", reason="CACHE_FULL", metadata=metadata
        )
    if code in _TRANSIENT_CODES:
        return Unavailable(
            f"Redis cannot serve the call now ({code})",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
        )
    # Anything else is Redis refusing the command itself (unknown command on an old server,
    # ACL denial, ...): not transient, and not the caller's input either.
    return FailedPrecondition(
        f"Redis refused the command: {text[:200]}",
        reason="UNSUPPORTED_OPERATION",
        metadata=metadata,
    )


RedisErrors = MappedErrors
"""The context manager of `map_redis_error` (see `redis_errors`)."""


def redis_errors(target: str) -> RedisErrors:
    """The exception-mapping context manager for the service called `target`.

    Mapping: connection errors and BusyLoading -> `Unavailable(UPSTREAM_UNAVAILABLE)`,
    timeouts -> `DeadlineExceeded`, WRONGTYPE -> `FailedPrecondition(WRONG_TYPE)`,
    "not an integer" -> `NOT_AN_INTEGER`, overflow -> `INTEGER_OVERFLOW`, OOM ->
    `ResourceExhausted(CACHE_FULL)`, failover replies -> `Unavailable`; see `map_redis_error`.
    """
    return MappedErrors(target, map_redis_error)
