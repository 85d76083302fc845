"""`HttpEndpoint`: how a connection reaches an HTTP API: its base URL, the headers every
request carries, TLS, HTTP/2, and the path a health check GETs.

    connections:
      llm-gateway:
        type: http
        base_url: https://llm.internal/v1
        headers: {x-team: search}
        tls: {ca_file: /etc/ssl/internal-ca.pem}
        health_path: /health

An `https://` base URL speaks TLS (the system's CAs unless `tls:` says otherwise); `tls:`
settings with an `http://` base URL are refused, since they would silently do nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._common import ConfigModel
from .tls import TlsConfig

__all__ = ["HEADER_NAME", "HTTP_ENDPOINT_FIELDS", "HttpEndpoint", "checked_headers"]

HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP header name (RFC 9110 token)."""


def checked_headers(value: Mapping[str, str]) -> Mapping[str, str]:
    """Configured headers, refused unless every name is a header name and no value holds a
    line break (which would inject another header).

    Raises:
        PydanticCustomError: naming the bad header names.
    """
    bad = sorted(name for name in value if not HEADER_NAME.fullmatch(name))
    if bad:
        raise PydanticCustomError(
            "header_name", "not HTTP header names: {names}", {"names": ", ".join(bad)}
        )
    if any("\r" in text or "\n" in text for text in value.values()):
        raise PydanticCustomError("header_value", "a header value may not hold a line break")
    return value


"""An HTTP header name (RFC 9110 token)."""


def _url_problem(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.query or parts.fragment or "{" in value or "}" in value or " " in value:
        return "must be scheme://host[:port][/path], without query, fragment or placeholders"
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        return "has an invalid port"
    return None


class HttpEndpoint(ConfigModel):
    """An HTTP(S) API: one pooled client, shared by every service on the connection."""

    base_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Where relative request paths go: scheme://host[:port][/path] "
        "(https:// speaks TLS). Required under connections:.",
    )
    headers: Mapping[str, str] = Field(
        default_factory=dict,
        description="Headers sent on every request of every service on the connection (a "
        "service's own headers and credentials are added to them). Default none.",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS settings for an https:// base_url: ca_file, cert_file and key_file "
        "(mutual TLS), verify, server_name. Default: the system's CAs.",
    )
    http2: bool = Field(
        default=False,
        description="Offer HTTP/2 (over TLS, by ALPN; the server may still answer in "
        "HTTP/1.1). Default false: HTTP/1.1, which streams with less CPU per chunk.",
    )
    health_path: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^/[^\s?#]*$",
        description="A path under base_url that health checks GET (any 2xx or 3xx is "
        "healthy). Default null: the connection is not probed, its health is unknown.",
    )
    follow_redirects: bool = Field(
        default=True, description="Follow 3xx redirects (as the AI SDKs do). Default true."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        problem = _url_problem(value) if value is not None else None
        if problem is not None:
            raise PydanticCustomError("http_url", problem)
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        return checked_headers(value)

    @model_validator(mode="after")
    def _tls_only_with_https(self) -> HttpEndpoint:
        if self.health_path is not None and self.base_url is None:
            raise PydanticCustomError("health_path_without_base_url", "health_path needs base_url")
        if self.tls.enabled and self.base_url is not None and self.base_url.startswith("http:"):
            raise PydanticCustomError(
                "tls_without_https", "tls is set but base_url is http://: use an https:// URL"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        """Whether the base URL speaks TLS."""
        return self.base_url is not None and self.base_url.startswith("https:")


HTTP_ENDPOINT_FIELDS = frozenset(HttpEndpoint.model_fields)
