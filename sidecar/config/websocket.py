"""`WebSocketEndpoint`: how a connection reaches a WebSocket server: its URL, the headers
every handshake carries, TLS, and whether health checks open a WebSocket.

    connections:
      market-feed:
        type: websocket
        url: wss://feed.internal/v2
        headers: {x-team: trading}
        tls: {ca_file: /etc/ssl/internal-ca.pem}
        health_check: true

A `wss://` URL speaks TLS (the system's CAs unless `tls:` says otherwise); `tls:` settings
with a `ws://` URL are refused, since they would silently do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._common import ConfigModel
from .http import HEADER_NAME, checked_headers
from .tls import TlsConfig

__all__ = [
    "HEADER_NAME",
    "WEBSOCKET_ENDPOINT_FIELDS",
    "WebSocketEndpoint",
    "websocket_url_problem",
]


def websocket_url_problem(value: str) -> str | None:
    """Why `value` is not a usable ws:// or wss:// URL, or None."""
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return "must be a ws:// or wss:// URL with a host"
    if parts.fragment or parts.username or parts.password or any(c in value for c in " {}\r\n"):
        return "must be scheme://host[:port][/path][?query], without fragment or credentials"
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        return "has an invalid port"
    return None


class WebSocketEndpoint(ConfigModel):
    """A WebSocket server: every session of every service on the connection opens here."""

    url: str | None = Field(
        default=None,
        max_length=2048,
        description="Where sessions open: ws[s]://host[:port][/path][?query] (wss:// speaks "
        "TLS); a caller's path goes under its path. Required under connections:.",
    )
    headers: Mapping[str, str] = Field(
        default_factory=dict,
        description="Headers sent on every handshake (a service's own are added). Default none.",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS settings for a wss:// URL: ca_file, cert_file and key_file (mutual "
        "TLS), verify, server_name. Default: the system's CAs.",
    )
    health_check: bool = Field(
        default=False,
        description="Health checks open a WebSocket to the URL and close it (1000). Default "
        "false: the connection is not probed, its health is unknown.",
    )

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str | None) -> str | None:
        problem = websocket_url_problem(value) if value is not None else None
        if problem is not None:
            raise PydanticCustomError("websocket_url", problem)
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        return checked_headers(value)

    @model_validator(mode="after")
    def _tls_only_with_wss(self) -> WebSocketEndpoint:
        if self.health_check and self.url is None:
            raise PydanticCustomError("health_check_without_url", "health_check needs url")
        if self.tls.enabled and self.url is not None and self.url.startswith("ws:"):
            raise PydanticCustomError(
                "tls_without_wss", "tls is set but url is ws://: use a wss:// URL"
            )
        return self


WEBSOCKET_ENDPOINT_FIELDS = frozenset(WebSocketEndpoint.model_fields)
