"""How an aws connection's settings become aiobotocore's: the client `AioConfig` (timeouts,
pool, retries off, S3 addressing, client certificate), the `verify` argument, and the TLS
session class that checks `tls.server_name`.

- botocore's own retries are off (`total_max_attempts: 1`: one attempt, no retry): the
  sidecar's resilience pipeline is the only retry loop, so a throttled or failed call is
  seen (and counted by the breaker) once. Note that botocore's `max_attempts` counts the
  *retries*, not the attempts: `max_attempts: 1` would still send a throttled call twice.
- `tls:` maps onto what botocore offers: `verify` (False, or the CA bundle's path) and
  `client_cert` (cert, key). `server_name` has no botocore option: the connection then uses
  an aiobotocore HTTP session whose TLS context checks (and sends as SNI) that name instead
  of the host of `endpoint_url`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidecar.config import AwsEndpoint
from sidecar.config.tls import TlsConfig

if TYPE_CHECKING:
    from aiobotocore.config import AioConfig

__all__ = ["ClientOptions", "client_options"]

USER_AGENT = "integration-sidecar"


@dataclass(frozen=True)
class ClientOptions:
    """What every client of one connection is created with."""

    config: AioConfig
    verify: bool | str | None
    """botocore's `verify`: None (its default: verify with its CA bundle), False, or a path."""
    endpoint_url: str | None
    region: str | None
    connect_timeout: float
    read_timeout: float


def client_options(
    settings: AwsEndpoint,
    *,
    connect_timeout: float,
    read_timeout: float,
    max_pool_connections: int,
) -> ClientOptions:
    """The client options of one connection's settings (no I/O)."""
    from aiobotocore.config import AioConfig

    tls = settings.tls
    options: dict[str, Any] = {
        "region_name": settings.region,
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "max_pool_connections": max_pool_connections,
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "s3": {"addressing_style": settings.addressing_style},
        "user_agent_extra": USER_AGENT,
    }
    verify: bool | str | None = None
    if tls.enabled:
        if not tls.verify:
            verify = False
        elif tls.ca_file is not None:
            verify = str(tls.ca_file)
        if tls.cert_file is not None and tls.key_file is not None:
            options["client_cert"] = (str(tls.cert_file), str(tls.key_file))
        if tls.server_name is not None:
            options["http_session_cls"] = _server_name_session(tls)
    return ClientOptions(
        config=AioConfig(**options),
        verify=verify,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


class _NamedContext(ssl.SSLContext):
    """A client TLS context that checks (and sends as SNI) `pinned_name` whatever host the
    connection is made to; asyncio, uvloop and aiohttp all go through `wrap_bio`."""

    pinned_name: str

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.pinned_name, session)


def _server_name_session(tls: TlsConfig) -> type[Any]:
    """aiobotocore's aiohttp session, with the context of `tls.server_name`."""
    from aiobotocore.httpsession import AIOHTTPSession

    server_name = tls.server_name
    assert server_name is not None
    name: str = server_name

    class ServerNameSession(AIOHTTPSession):
        def _get_ssl_context(self) -> ssl.SSLContext:
            context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
            context.pinned_name = name
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            return context

    return ServerNameSession
