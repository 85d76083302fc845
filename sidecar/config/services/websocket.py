"""`WebSocketServiceConfig`: a WebSocket upstream (`type: websocket`), served by
WebSocketService's Connect bridge.

    services:
      feed:
        type: websocket
        url: wss://feed.internal/v2          # inline: a websocket connection of its own
        allowed_headers: [x-tenant]          # the only headers a caller may pass
        max_frame_size: 1MiB
        buffered_frames: 16
      chat:
        type: websocket
        connection: chat-ws                  # a `type: websocket` connection

A caller's path and query go under the URL's path (validated, never a new host), and a
caller's headers must be allow-listed here.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastOne, ServiceName
from .._units import Bytes, DurationSeconds, MiB
from ..websocket import HEADER_NAME, WebSocketEndpoint
from .base import ServiceBase

__all__ = ["HANDSHAKE_HEADERS", "WebSocketServiceConfig"]

_CONNECTION_FIELDS: Final = frozenset({"url", "tls", "health_check"})
HANDSHAKE_HEADERS: Final = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
    }
)
"""Headers the WebSocket handshake owns; no caller may set them (nor any sec-websocket-*)."""


class WebSocketServiceConfig(WebSocketEndpoint, ServiceBase):
    """A WebSocket upstream (`type: websocket`)."""

    type: Literal["websocket"] = Field(default="websocket", description="Service type.")
    backend: Literal["upstream"] = Field(
        default="upstream", description="upstream: bridge to the configured WebSocket."
    )
    connection: ServiceName | None = Field(
        default=None,
        description="A websocket connection (under connections:) to open sessions on. Not "
        "with url, tls or health_check. Default null: a connection of this service's own.",
    )
    allowed_headers: tuple[str, ...] = Field(
        default=(),
        max_length=64,
        description="Handshake headers a caller may pass (case-insensitive); any other is "
        "refused. Default none.",
    )
    max_frame_size: Bytes = Field(
        default=1 * MiB,
        le=64 * MiB,
        description="Bytes of one frame either way at most: a caller's larger frame is "
        "refused, an upstream's larger one closes the WebSocket with 1009. Default 1MiB.",
    )
    buffered_frames: AtLeastOne = Field(
        default=16,
        le=10_000,
        description="Frames buffered each way at most; when full, the sidecar stops reading "
        "the side that sends. Default 16.",
    )
    ping_interval: DurationSeconds | None = Field(
        default=20.0, description="Ping the upstream every so often (null: never). Default 20s."
    )
    ping_timeout: DurationSeconds | None = Field(
        default=20.0,
        description="Close (1011) when a pong is this late (null: never). Default 20s.",
    )
    max_sessions: AtLeastOne = Field(
        default=1000,
        le=100_000,
        description="WebSockets open at once on this service; more are refused with "
        "RESOURCE_EXHAUSTED. Default 1000.",
    )

    @field_validator("allowed_headers")
    @classmethod
    def _allowable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(name.lower() for name in value)
        bad = sorted(name for name in names if not HEADER_NAME.fullmatch(name))
        if bad:
            raise PydanticCustomError(
                "header_name", "not HTTP header names: {names}", {"names": ", ".join(bad)}
            )
        owned = sorted(
            name for name in names if name in HANDSHAKE_HEADERS or name.startswith("sec-websocket")
        )
        if owned:
            raise PydanticCustomError(
                "handshake_header",
                "the handshake sets {names} itself: a caller may not",
                {"names": ", ".join(owned)},
            )
        return names

    @model_validator(mode="after")
    def _url_or_connection(self) -> WebSocketServiceConfig:
        if self.connection is None:
            if self.url is None:
                raise PydanticCustomError(
                    "websocket_url", "set url (ws:// or wss://) or connection"
                )
            return self
        inline = sorted(_CONNECTION_FIELDS & self.model_fields_set)
        if inline:
            raise PydanticCustomError(
                "inline_websocket_with_connection",
                "{names} belong to connection {connection}; remove them here",
                {"names": ", ".join(inline), "connection": repr(self.connection)},
            )
        return self
