"""The `api` service type: one named REST upstream that HttpService calls, on an `http`
connection.

    services:
      billing:
        type: api
        base_url: https://billing.internal/api/v2   # its own connection (or `connection:`)
        tls: {ca_file: /etc/ssl/internal-ca.pem}
        auth:
          type: oauth2_client_credentials
          token_url: https://auth.internal/oauth/token
          client_id: sidecar
          client_secret: ${BILLING_CLIENT_SECRET}
          scope: billing.read billing.write
        headers: {x-team: search}
        query: {api-version: "2024-06-01"}
        max_response_bytes: 10MiB
        timeouts: {connect: 2s, read: 10s, request: 30s}

Like an `ai_model` service's `endpoint`, the inline `base_url`, `tls`, `http2` and
`health_path` make an http connection of the service's own, named like it; `connection:`
names one under `connections:` (or another service's) instead, and then those settings
belong to it. `auth`, `headers`, `query` and the bounds stay per service. Secrets
(`token`, `password`, `key`, `client_secret`) are `SecretStr`: write them as `${ENV}`
references; they never appear in a repr, a log or a dump.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .._common import ConfigModel, ServiceName
from .._units import Bytes, DurationSeconds, MiB
from ..http import HttpEndpoint
from ..tls import TlsConfig
from .base import ServiceBase

__all__ = [
    "ApiAuthConfig",
    "ApiKeyAuth",
    "ApiServiceConfig",
    "BasicAuth",
    "BearerAuth",
    "NoAuth",
    "OAuth2ClientCredentials",
]

INLINE_CONNECTION_FIELDS: Final = frozenset({"base_url", "tls", "http2", "health_path"})
"""Settings that make the service's own connection: refused beside `connection:`."""


def _url_problem(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.fragment or any(character in value for character in " \r\n\0"):
        return "must be a URL without fragment, spaces or line breaks"
    return None


def _non_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise PydanticCustomError("empty_secret", "must not be empty (is the variable set?)")
    return value


def _no_line_breaks(value: str) -> str:
    if any(character in value for character in "\r\n\0"):
        raise PydanticCustomError("header_value", "may not hold a line break or NUL")
    return value


class NoAuth(ConfigModel):
    """No credentials."""

    type: Literal["none"] = Field(description="Send no credentials.")


class BearerAuth(ConfigModel):
    """`Authorization: Bearer <token>`."""

    type: Literal["bearer"] = Field(description="A static bearer token.")
    token: SecretStr = Field(description="The token, as a ${ENV} reference. Required.")

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return _non_empty_secret(value)


class BasicAuth(ConfigModel):
    """HTTP Basic authentication."""

    type: Literal["basic"] = Field(description="HTTP Basic (RFC 7617).")
    username: str = Field(max_length=1024, description="The user name. Required.")
    password: SecretStr = Field(description="The password, as a ${ENV} reference. Required.")

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise PydanticCustomError("basic_username", "a Basic user name may not hold ':'")
        return _no_line_breaks(value)


class ApiKeyAuth(ConfigModel):
    """An API key in a header (`X-API-Key: <key>`) or a query parameter (`?api_key=<key>`)."""

    type: Literal["api_key"] = Field(description="An API key in a header or query parameter.")
    key: SecretStr = Field(description="The key, as a ${ENV} reference. Required.")
    header: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="The header carrying the key. Default X-API-Key (when query_parameter "
        "is not set).",
    )
    query_parameter: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The query parameter carrying the key instead of a header. Default null.",
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        return _non_empty_secret(value)

    @field_validator("query_parameter")
    @classmethod
    def _parameter(cls, value: str | None) -> str | None:
        return None if value is None else _no_line_breaks(value)

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if self.header is not None and self.query_parameter is not None:
            raise PydanticCustomError("api_key_place", "set header or query_parameter, not both")
        return self

    @property
    def header_name(self) -> str | None:
        """The header the key goes in, or None when it goes in the query."""
        if self.query_parameter is not None:
            return None
        return self.header or "X-API-Key"


class OAuth2ClientCredentials(ConfigModel):
    """OAuth 2.0 client credentials (RFC 6749 section 4.4): a token fetched from
    `token_url`, cached, refreshed `refresh_before` its expiry (one refresh for every
    concurrent call), and refreshed once more when the upstream answers 401."""

    type: Literal["oauth2_client_credentials"] = Field(
        description="OAuth 2.0 client credentials grant."
    )
    token_url: str = Field(
        max_length=2048,
        description="The token endpoint (http:// or https://). It may be another host than "
        "the upstream; nothing but the token request goes there. Required.",
    )
    client_id: str = Field(min_length=1, max_length=1024, description="Required.")
    client_secret: SecretStr = Field(description="As a ${ENV} reference. Required.")
    scope: str | None = Field(
        default=None, max_length=4096, description="Space-separated scopes. Default null."
    )
    audience: str | None = Field(
        default=None,
        max_length=2048,
        description="An `audience` parameter (Auth0, Okta ...). Default null.",
    )
    client_auth: Literal["basic", "post"] = Field(
        default="basic",
        description="How the client authenticates to the token endpoint: basic (HTTP Basic, "
        "client_secret_basic) or post (client_id and client_secret in the form body). "
        "Default basic.",
    )
    refresh_before: DurationSeconds = Field(
        default=60.0,
        description="Refresh a token this long before it expires (at most half its "
        "lifetime), while calls go on with the current one. Default 60s.",
    )
    default_expires_in: DurationSeconds = Field(
        default=3600.0,
        description="The lifetime of a token whose response has no expires_in. Default 1h.",
    )
    timeout: DurationSeconds = Field(
        default=10.0, description="Limit on one token request. Default 10s."
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS for an https:// token_url (ca_file, client certificate, verify). "
        "Default: the system's CAs.",
    )

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        return _non_empty_secret(value)

    @field_validator("token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        problem = _url_problem(value)
        if problem is not None:
            raise PydanticCustomError("http_url", problem)
        return value


ApiAuthConfig = Annotated[
    NoAuth | BearerAuth | BasicAuth | ApiKeyAuth | OAuth2ClientCredentials,
    Field(discriminator="type"),
]
"""The credentials of an api service; `type` picks the kind."""


class ApiServiceConfig(HttpEndpoint, ServiceBase):
    """A REST upstream (`type: api`), served by HttpService."""

    type: Literal["api"] = Field(default="api", description="Service type.")
    backend: Literal["http"] = Field(default="http", description="The backend. Default http.")
    connection: ServiceName | None = Field(
        default=None,
        description="An http connection (under connections:, or another service's) to talk "
        "over: its base_url, TLS, HTTP/2 and pool, shared with every service naming it. Not "
        "with base_url, tls, http2 or health_path. Default null: a connection of this "
        "service's own, made from those settings.",
    )
    auth: ApiAuthConfig = Field(
        default_factory=lambda: NoAuth(type="none"),
        description="Credentials: {type: none}, {type: bearer, token}, {type: basic, "
        "username, password}, {type: api_key, key, header | query_parameter}, or {type: "
        "oauth2_client_credentials, token_url, client_id, client_secret, scope ...}. "
        "Default none.",
    )
    query: Mapping[str, str] = Field(
        default_factory=dict,
        description="Query parameters on every request, before the caller's. Default none.",
    )
    follow_redirects: bool = Field(
        default=False,
        description="Follow 3xx redirects that stay on the upstream (same scheme, host and "
        "port, under base_url's path); a redirect elsewhere is refused with "
        "INVALID_ARGUMENT. Default false: a 3xx is answered as it is.",
    )
    max_redirects: int = Field(
        default=5, ge=1, le=20, description="Redirects followed at most. Default 5."
    )
    max_request_bytes: Bytes = Field(
        default=10 * MiB,
        le=1024 * MiB,
        description="Largest request body of Call (and head of CallStream); larger is "
        "INVALID_ARGUMENT. Default 10MiB.",
    )
    max_response_bytes: Bytes = Field(
        default=10 * MiB,
        le=1024 * MiB,
        description="Largest response body of Call; larger is RESOURCE_EXHAUSTED (use "
        "CallStream). It is also capped by the server's largest gRPC message. Default 10MiB.",
    )
    request_transform: str | None = Field(
        default=None,
        max_length=128,
        description="A transform (transforms:, xml_to_json or validate:<schema>) every "
        "request body goes through before it is sent; when it fails nothing is sent "
        "(INVALID_ARGUMENT). A call's own request_transform replaces it. Default none.",
    )
    response_transform: str | None = Field(
        default=None,
        max_length=128,
        description="A transform every 2xx answer of Call goes through (CallStream streams "
        "answers as they come). A call's own response_transform replaces it. Default none.",
    )

    @field_validator("query")
    @classmethod
    def _query_values(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for name, text in value.items():
            if not name:
                raise PydanticCustomError("query_name", "a query parameter needs a name")
            _no_line_breaks(text)
        return value

    @model_validator(mode="after")
    def _inline_or_connection(self) -> ApiServiceConfig:
        if self.connection is None:
            if self.base_url is None:
                raise PydanticCustomError(
                    "api_upstream", "set base_url (or connection: an http connection)"
                )
            return self
        inline = sorted(INLINE_CONNECTION_FIELDS & self.model_fields_set)
        if inline:
            raise PydanticCustomError(
                "inline_http_with_connection",
                "{names} belong to connection {connection}; remove them here",
                {"names": ", ".join(inline), "connection": repr(self.connection)},
            )
        return self
