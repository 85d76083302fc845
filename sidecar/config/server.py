"""The `server:` section: the gRPC server the application talks to.

Listening address, message size limits, keepalive, inbound authentication and inbound rate
limits. Every class and field is named after its YAML key (`server.keepalive.time` in the file
is `config.server.keepalive.time` in Python).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from ._address import ListenAddress
from ._common import AtLeastOne, BearerToken, ConfigModel, GrpcMessageSize, MethodName, PositiveRate
from ._units import DurationSeconds, MiB

__all__ = ["AuthConfig", "InboundRateLimitConfig", "KeepaliveConfig", "ServerConfig"]


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


class AuthConfig(ConfigModel):
    """Inbound bearer-token authentication."""

    tokens: tuple[BearerToken, ...] = Field(
        default=(),
        description="Accepted bearer tokens; a non-empty list turns authentication on. "
        "Write them as ${ENV} references: secrets never belong in the file. Default [].",
    )

    @property
    def enabled(self) -> bool:
        """Whether callers must present a token."""
        return bool(self.tokens)


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
