"""`GraphQLServiceConfig`: a GraphQL API (`type: graphql`), served by GraphQLService.

    services:
      shop:
        type: graphql
        endpoint: https://shop.internal/graphql   # inline: an http connection of its own
        auth: {type: bearer, token: "${SHOP_TOKEN}"}
        introspection: true                       # load the schema at start-up
        subscriptions:
          url: wss://shop.internal/graphql        # default: the endpoint, ws(s)://
          reconnect: {enabled: true, max_attempts: 5}
      catalog:
        type: graphql
        connection: catalog-api                   # a `type: http` connection ...
        path: /graphql                            # ... and the path under its base_url

Execute POSTs over the http connection (named, or the service's own made from `endpoint`,
`tls`, `headers`, `http2`, like an `ai_model`'s). Subscriptions open a WebSocket per
Subscribe call to `subscriptions.url`; its TLS is `subscriptions.tls`, else the service's
own `tls` (a named http connection's TLS is not reused: set `subscriptions.tls`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastOne, ConfigModel, ServiceName
from .._units import Bytes, DurationSeconds, KiB, MiB
from ..http import HttpEndpoint
from ..tls import TlsConfig
from ..websocket import websocket_url_problem
from .base import ServiceBase

__all__ = [
    "GraphQLAuthConfig",
    "GraphQLReconnectConfig",
    "GraphQLServiceConfig",
    "GraphQLSubscriptionsConfig",
]

_CONNECTION_FIELDS: Final = frozenset({"base_url", "tls", "http2", "health_path"})
"""Inline settings that a named http connection gives instead."""


class GraphQLAuthConfig(ConfigModel):
    """How the sidecar authenticates to the GraphQL API (requests and subscriptions)."""

    type: Literal["bearer", "header", "none"] = Field(
        default="none",
        description="bearer: `Authorization: Bearer <token>`; header: the token in the header "
        "named by `header`; none: nothing. Default none.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="The credential; write it as a ${ENV} reference. Never logged. Default null.",
    )
    header: str = Field(default="authorization", description="Header with type: header.")

    @model_validator(mode="after")
    def _token_when_needed(self) -> GraphQLAuthConfig:
        if self.type != "none" and self.token is None:
            raise PydanticCustomError(
                "auth_token", "auth type {kind} needs token", {"kind": self.type}
            )
        return self

    def header_pair(self) -> tuple[str, str] | None:
        """The (name, value) to send, or None."""
        if self.type == "none" or self.token is None:
            return None
        secret = self.token.get_secret_value()
        if self.type == "bearer":
            return "authorization", f"Bearer {secret}"
        return self.header.lower(), secret


class GraphQLReconnectConfig(ConfigModel):
    """Opening a subscription's WebSocket again after it closed before `complete`."""

    enabled: bool = Field(default=False, description="Reconnect at all. Default false.")
    max_attempts: AtLeastOne = Field(
        default=5, description="Reconnections per subscription at most. Default 5."
    )
    base_delay: DurationSeconds = Field(
        default=0.5, description="Backoff before the first (doubling, full jitter). Default 500ms."
    )
    max_delay: DurationSeconds = Field(default=10.0, description="Longest backoff. Default 10s.")


class GraphQLSubscriptionsConfig(ConfigModel):
    """Where and how subscriptions run (`graphql-transport-ws`)."""

    url: str | None = Field(
        default=None,
        max_length=2048,
        description="The WebSocket URL (ws:// or wss://). Default: the endpoint (or the "
        "connection's base_url + path) with ws:// for http:// and wss:// for https://.",
    )
    tls: TlsConfig | None = Field(
        default=None,
        description="TLS of a wss:// URL. Default: the service's own tls (system CAs).",
    )
    init_payload: Mapping[str, str] = Field(
        default_factory=dict,
        description="The connection_init payload; the auth header (if any) is added to it, "
        "as well as sent on the handshake. Default {}.",
    )
    connection_init_timeout: DurationSeconds = Field(
        default=10.0,
        description="Wait for connection_ack at most this long (also the handshake's). "
        "Default 10s.",
    )
    ping_interval: DurationSeconds | None = Field(
        default=20.0,
        description="WebSocket ping every so often (null: never). Default 20s.",
    )
    ping_timeout: DurationSeconds | None = Field(
        default=20.0,
        description="Close a WebSocket whose pong is this late (null: never). Default 20s.",
    )
    reconnect: GraphQLReconnectConfig = Field(
        default_factory=GraphQLReconnectConfig, description="Reconnection. Default off."
    )

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str | None) -> str | None:
        problem = websocket_url_problem(value) if value is not None else None
        if problem is not None:
            raise PydanticCustomError("websocket_url", problem)
        return value


class GraphQLServiceConfig(HttpEndpoint, ServiceBase):
    """A GraphQL API (`type: graphql`)."""

    type: Literal["graphql"] = Field(default="graphql", description="Service type.")
    backend: Literal["http"] = Field(
        default="http", description="http: POST JSON, subscriptions over WebSocket."
    )
    connection: ServiceName | None = Field(
        default=None,
        description="An http connection (under connections:) to POST over; its base_url "
        "plus `path` is the endpoint. Not with endpoint. Default null: a connection of this "
        "service's own, made from endpoint, tls, headers and http2.",
    )
    base_url: str | None = Field(  # the spec's `endpoint`
        default=None,
        max_length=2048,
        validation_alias=AliasChoices("endpoint", "base_url"),
        description="`endpoint`: the GraphQL URL (https://host/graphql). Required without "
        "connection.",
    )
    path: str = Field(
        default="",
        max_length=2048,
        pattern=r"^(/[^\s?#]*)?$",
        description="With connection: the path under its base_url. Default ''.",
    )
    auth: GraphQLAuthConfig = Field(
        default_factory=GraphQLAuthConfig, description="Credentials. Default none."
    )
    introspection: bool = Field(
        default=False,
        description="Load the schema by introspection at start-up; then documents that do "
        "not validate are refused locally (INVALID_ARGUMENT) without an upstream request. "
        "Default false: only syntax is checked locally.",
    )
    query_cache_size: AtLeastOne = Field(
        default=1000,
        le=100_000,
        description="Parsed (and validated) documents kept, least recently used first out, "
        "keyed by the SHA-256 of their text. Default 1000.",
    )
    max_query_size: Bytes = Field(
        default=64 * KiB, le=4 * MiB, description="Bytes of a document at most. Default 64KiB."
    )
    max_query_tokens: AtLeastOne = Field(
        default=10_000,
        le=1_000_000,
        description="Lexical tokens of a document at most. Default 10000.",
    )
    max_variables_size: Bytes = Field(
        default=1 * MiB, le=64 * MiB, description="Bytes of the variables JSON. Default 1MiB."
    )
    max_variables_depth: AtLeastOne = Field(
        default=32, le=256, description="Nesting of the variables JSON at most. Default 32."
    )
    max_response_size: Bytes = Field(
        default=16 * MiB,
        le=1024 * MiB,
        description="Bytes of an answer (or one subscription event) at most; also capped by "
        "the server's max_send_message_size. Default 16MiB.",
    )
    max_subscriptions: AtLeastOne = Field(
        default=100,
        le=100_000,
        description="Subscriptions open at once on this service (one WebSocket each); more "
        "are refused with RESOURCE_EXHAUSTED. Default 100.",
    )
    subscriptions: GraphQLSubscriptionsConfig = Field(
        default_factory=GraphQLSubscriptionsConfig, description="Subscriptions."
    )

    @model_validator(mode="after")
    def _endpoint_or_connection(self) -> GraphQLServiceConfig:
        if self.connection is None:
            if self.base_url is None:
                raise PydanticCustomError(
                    "graphql_endpoint", "set endpoint (the GraphQL URL) or connection"
                )
            if self.path:
                raise PydanticCustomError(
                    "graphql_path", "path goes with connection; put it in endpoint"
                )
            return self
        inline = sorted(_CONNECTION_FIELDS & self.model_fields_set)
        if inline:
            shown = ["endpoint" if name == "base_url" else name for name in inline]
            raise PydanticCustomError(
                "inline_http_with_connection",
                "{names} belong to connection {connection}; remove them here",
                {"names": ", ".join(shown), "connection": repr(self.connection)},
            )
        return self
