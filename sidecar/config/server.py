"""The `server:` section: the gRPC server the application talks to.

Listening address, TLS and mutual TLS, the Unix socket's mode and group, message size limits,
keepalive, inbound authentication, per-caller permissions and inbound rate limits. Every class
and field is named after its YAML key (`server.keepalive.time` in the file is
`config.server.keepalive.time` in Python).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from ._address import ListenAddress
from ._common import (
    AtLeastOne,
    BearerToken,
    ConfigModel,
    GrpcMessageSize,
    MethodName,
    PositiveRate,
    ServiceName,
)
from ._units import DurationSeconds, MiB

__all__ = [
    "AuthConfig",
    "CallerConfig",
    "GrantConfig",
    "InboundRateLimitConfig",
    "KeepaliveConfig",
    "ListenerTlsConfig",
    "ServerConfig",
    "UnixSocketConfig",
]

MAX_CALLERS = 1000
"""Callers under `server.auth.callers` at most (each is checked per call by a dict lookup;
the bound keeps start-up and the per-method tables small)."""
MAX_IDENTITIES = 1000
"""Entries in `server.tls.allowed_identities` at most."""

_GRPC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,254}")
# A SAN as a certificate carries it: a DNS name, an IP address, an e-mail or a URI such as a
# SPIFFE ID; a trailing `*` matches by prefix (`spiffe://cluster.local/ns/shop/*`).
_IDENTITY = re.compile(r"[!-~]{1,2048}")


def _check_identity(value: str) -> str:
    if not _IDENTITY.fullmatch(value) or "*" in value[:-1]:
        raise PydanticCustomError(
            "invalid_identity",
            "invalid identity {value}: a certificate SAN (DNS name, IP, URI such as "
            "spiffe://trust.domain/path), printable ASCII without spaces; `*` only at the end",
            {"value": repr(value)},
        )
    return value


def _check_grpc_name(value: str) -> str:
    if value != "*" and not _GRPC_NAME.fullmatch(value):
        raise PydanticCustomError(
            "invalid_grpc_name",
            "invalid name {value}: a gRPC service or method name, or '*'",
            {"value": repr(value)},
        )
    return value


def _octal_mode(value: Any) -> Any:
    """`0660` in YAML 1.1 is already the integer 432; a quoted "0660" or "0o660" is octal."""
    if isinstance(value, str):
        try:
            return int(value.removeprefix("0o"), 8)
        except ValueError:
            raise PydanticCustomError(
                "invalid_mode", "must be an octal file mode such as 0600 or 0660"
            ) from None
    return value


Identity = Annotated[str, AfterValidator(_check_identity)]
"""A client certificate identity: one of its subject alternative names."""
GrpcName = Annotated[str, AfterValidator(_check_grpc_name)]
"""A service (`CacheService`, `integration.v1.CacheService`), a method (`Get`) or `*`."""
FileMode = Annotated[int, BeforeValidator(_octal_mode), Field(ge=0, le=0o777)]


class KeepaliveConfig(ConfigModel):
    """HTTP/2 keepalive: finds dead peers, and tells clients how often they may ping."""

    time: DurationSeconds = Field(
        default=7200.0,
        description="Ping an idle connection this often (grpc.keepalive_time_ms). Default 2h.",
    )
    timeout: DurationSeconds = Field(
        default=20.0,
        description="Close the connection if a ping is not answered within this "
        "(grpc.keepalive_timeout_ms). Default 20s.",
    )
    permit_without_calls: bool = Field(
        default=False,
        description="Allow keepalive pings on connections with no active call "
        "(grpc.keepalive_permit_without_calls). Default false.",
    )
    min_ping_interval: DurationSeconds = Field(
        default=300.0,
        description="Least time between client pings without data before the server answers "
        "with GOAWAY (grpc.http2.min_ping_interval_without_data_ms). Default 5m.",
    )


class ListenerTlsConfig(ConfigModel):
    """TLS on the sidecar's own listener; with `client_ca_file`, mutual TLS.

    The files are read again when they change (Kubernetes swaps a mounted Secret's files in
    place): the next TLS handshake serves the new certificate, without a restart. They are
    read at start-up, not when the file is validated: `check-config` runs where the Secret
    is not mounted (CI), and a file there at validation proves nothing about later.
    """

    cert_file: Path = Field(
        description="PEM certificate chain the sidecar serves (leaf first). Required."
    )
    key_file: Path = Field(description="PEM private key of cert_file. Required.")
    client_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of the CAs that sign client certificates. Set: every client "
        "must present a certificate one of them signed (mutual TLS), or the handshake fails. "
        "Default null: no client certificate asked for.",
    )
    allowed_identities: tuple[Identity, ...] = Field(
        default=(),
        max_length=MAX_IDENTITIES,
        description="Client identities let in: a call whose client certificate carries none "
        "of these subject alternative names (DNS, IP, URI such as a SPIFFE ID "
        "spiffe://cluster.local/ns/shop/sa/web; a trailing * matches by prefix) is refused "
        "with PERMISSION_DENIED. Needs client_ca_file. Default []: any certificate the CA "
        "signed.",
    )

    @model_validator(mode="after")
    def _identities_need_client_certificates(self) -> ListenerTlsConfig:
        if self.allowed_identities and self.client_ca_file is None:
            raise PydanticCustomError(
                "identities_without_client_ca",
                "allowed_identities needs client_ca_file: without client certificates "
                "there is no identity to check",
            )
        return self


class UnixSocketConfig(ConfigModel):
    """Who may connect to a Unix socket listener (`listen: unix:/path`)."""

    mode: FileMode = Field(
        default=0o600,
        description="File mode of the socket; connecting needs write permission. Default "
        "0600: only the sidecar's user. 0660 with group: the group's members too.",
    )
    group: str | int | None = Field(
        default=None,
        description="Group (name or numeric id) given the socket file; the sidecar's user "
        "must be a member or root. Default null: the sidecar's own group.",
    )


class GrantConfig(ConfigModel):
    """What one caller may call: services, their methods, and the targets they name."""

    services: tuple[GrpcName, ...] = Field(
        min_length=1,
        description="Services: CacheService, integration.v1.CacheService, reflection (both "
        "reflection services), or * for every service. Required.",
    )
    methods: tuple[GrpcName, ...] = Field(
        default=("*",),
        min_length=1,
        description="Methods of those services (Get, Set), or *. Default [*].",
    )
    targets: tuple[ServiceName | Literal["*"], ...] = Field(
        default=("*",),
        min_length=1,
        description="Configured services (a request's `target`; an empty target means the "
        "default one, checked by its name) the calls may name, or *. Default [*].",
    )


class CallerConfig(ConfigModel):
    """A caller known by its bearer token or its client certificate, and what it may call."""

    token: BearerToken | None = Field(
        default=None,
        description="The caller's bearer token, as a ${ENV} reference. Set token or identity.",
    )
    identity: Identity | None = Field(
        default=None,
        description="A subject alternative name of the caller's client certificate (a "
        "SPIFFE ID such as spiffe://cluster.local/ns/shop/sa/web, a DNS name); needs "
        "server.tls.client_ca_file. Set token or identity.",
    )
    allow: tuple[GrantConfig, ...] = Field(
        default=(),
        description="What the caller may call; anything else is PERMISSION_DENIED. "
        "Default []: nothing but health checks.",
    )

    @model_validator(mode="after")
    def _token_or_identity(self) -> CallerConfig:
        if (self.token is None) == (self.identity is None):
            raise PydanticCustomError(
                "caller_token_or_identity", "set exactly one of token and identity"
            )
        return self


class AuthConfig(ConfigModel):
    """Inbound bearer-token authentication, and per-caller permissions."""

    tokens: tuple[BearerToken, ...] = Field(
        default=(),
        description="Accepted bearer tokens; a non-empty list turns authentication on. "
        "Write them as ${ENV} references: secrets never belong in the file. Every token "
        "may call everything; to limit what a token may call, give it a caller instead. "
        "Default [].",
    )
    callers: Mapping[ServiceName, CallerConfig] = Field(
        default_factory=dict,
        max_length=MAX_CALLERS,
        description="Named callers, each with the services, methods and targets it may "
        "call. Set: permissions are on and deny by default (a caller matching none of them "
        "may call nothing but health checks). A caller's token is an accepted token. "
        "Default {}: every authenticated caller may call everything.",
    )

    @model_validator(mode="after")
    def _tokens_or_callers(self) -> AuthConfig:
        if self.tokens and self.callers:
            raise PydanticCustomError(
                "tokens_beside_callers",
                "with callers set, a token in tokens could call nothing (permissions deny "
                "by default): give each token a caller with what it may call",
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether callers must present a token."""
        return bool(self.tokens) or any(c.token is not None for c in self.callers.values())

    def accepted_tokens(self) -> list[str]:
        """Every accepted bearer token: the plain ones and the callers'."""
        tokens = [t.get_secret_value() for t in self.tokens]
        tokens += [c.token.get_secret_value() for c in self.callers.values() if c.token]
        return tokens


class InboundRateLimitConfig(ConfigModel):
    """A token bucket for calls into the sidecar; excess calls get RESOURCE_EXHAUSTED."""

    requests_per_second: PositiveRate = Field(
        description="Sustained rate the bucket refills at. Required."
    )
    burst_size: AtLeastOne = Field(
        description="Bucket capacity: calls allowed at once after a quiet period. Required."
    )


class ServerConfig(ConfigModel):
    """The gRPC server the application talks to."""

    listen: ListenAddress = Field(
        default="127.0.0.1:50051",
        description="host:port or unix:/path. Default loopback only, since the app shares "
        "the pod: 127.0.0.1:50051. A Unix socket a live process answers on is refused at "
        "start; a stale socket file (left by a killed process) is reused.",
    )
    tls: ListenerTlsConfig | None = Field(
        default=None,
        description="TLS, or mutual TLS, on the listener. Default null: plaintext, fit for "
        "loopback and Unix sockets inside the pod.",
    )
    unix_socket: UnixSocketConfig = Field(
        default_factory=UnixSocketConfig,
        description="Mode and group of the socket file when listening on unix:/path.",
    )
    max_receive_message_size: GrpcMessageSize = Field(
        default=4 * MiB,
        description="Largest request message accepted (grpc.max_receive_message_length). "
        "Default 4MiB.",
    )
    max_send_message_size: GrpcMessageSize = Field(
        default=4 * MiB,
        description="Largest response message sent (grpc.max_send_message_length). Default 4MiB.",
    )
    compression: Literal["none", "gzip"] = Field(
        default="none",
        description="Compression of responses; gzip requests are always accepted. On "
        "loopback, compression costs CPU and saves nothing, hence the default none.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="Event loop the server runs on. uvloop's C loop takes ~10-15% less CPU "
        "per call than asyncio's own (measured in make bench); asyncio is the fallback. "
        "Default uvloop.",
    )
    shutdown_grace: DurationSeconds = Field(
        default=10.0,
        description="How long in-flight calls may finish after SIGTERM. Default 10s.",
    )
    reflection: bool = Field(
        default=True,
        description="Serve gRPC server reflection so grpcurl works without .proto files. "
        "Default true.",
    )
    keepalive: KeepaliveConfig = Field(
        default_factory=KeepaliveConfig, description="HTTP/2 keepalive settings."
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig, description="Inbound authentication. Default off."
    )
    inbound_rate_limits: Mapping[MethodName, InboundRateLimitConfig] = Field(
        default_factory=dict,
        description="Limits on calls into the sidecar, keyed by full method name "
        "('/integration.v1.CacheService/Get') or '*' for every method. Default {}.",
    )
    access_log: bool = Field(default=True, description="Log one line per call. Default true.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log level written. Default info."
    )

    @model_validator(mode="after")
    def _identities_need_client_certificates(self) -> ServerConfig:
        needs_ca = [n for n, c in self.auth.callers.items() if c.identity is not None]
        if needs_ca and (self.tls is None or self.tls.client_ca_file is None):
            raise PydanticCustomError(
                "caller_identity_without_mtls",
                "callers {names} are known by a certificate identity: set "
                "server.tls.client_ca_file so clients present certificates",
                {"names": ", ".join(needs_ca)},
            )
        return self
