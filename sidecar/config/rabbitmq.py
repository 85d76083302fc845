"""`RabbitMqEndpoint`: how a connection reaches a RabbitMQ broker (AMQP 0-9-1).

    connections:
      events-mq:
        type: rabbitmq
        url: amqps://mq.internal:5671/prod      # scheme://host[:port][/vhost]
        username: sidecar
        password: ${RABBITMQ_PASSWORD}
        tls: {ca_file: /etc/ssl/internal-ca.pem}
        heartbeat: 10s
        reconnect_interval: 1s

`amqps://` speaks TLS (the system's CAs unless `tls:` says otherwise); `tls:` settings with an
`amqp://` URL are refused, since they would silently do nothing. Credentials go in
`username`/`password` (a `${ENV}` reference), never in the URL, so they never reach a log.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._common import ConfigModel
from ._units import DurationSeconds
from .tls import TlsConfig

__all__ = ["RabbitMqEndpoint", "broker_url_problem"]


def broker_url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """Why `value` is not a `scheme://host[:port][/path]` URL of one of `schemes`, or None."""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        return f"must be a {' or '.join(s + '://' for s in schemes)} URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials: set username and password instead"
    if parts.fragment or parts.query or any(c in value for c in " {}\r\n"):
        return "must be scheme://host[:port][/path], without query or fragment"
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        return "has an invalid port"
    return None


class RabbitMqEndpoint(ConfigModel):
    """A RabbitMQ broker: one robust AMQP connection shared by every service naming it."""

    url: str = Field(
        default="amqp://127.0.0.1:5672/",
        max_length=2048,
        description="Where the broker listens: amqp[s]://host[:port][/vhost] (amqps:// speaks "
        "TLS). Default amqp://127.0.0.1:5672/ (the default vhost).",
    )
    username: str = Field(default="guest", max_length=255, description="Default guest.")
    password: SecretStr = Field(
        default=SecretStr("guest"),
        description="Write it as a ${ENV} reference; it never appears in logs. Default guest "
        "(RabbitMQ accepts guest only from localhost).",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS settings for an amqps:// URL: ca_file, cert_file/key_file, verify "
        "(not server_name: the URL's host is the name checked). Default: the system's CAs.",
    )
    heartbeat: DurationSeconds = Field(
        default=10.0,
        description="AMQP heartbeat: a silent link is declared dead after about twice this, "
        "and reconnected. Default 10s.",
    )
    reconnect_interval: DurationSeconds = Field(
        default=1.0,
        description="Seconds between reconnection attempts after the link is lost; open "
        "subscriptions and consumers resume once it is back. Default 1s.",
    )

    @field_validator("url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        problem = broker_url_problem(value, ("amqp", "amqps"))
        if problem is not None:
            raise PydanticCustomError("rabbitmq_url", problem)
        return value

    @model_validator(mode="after")
    def _tls_needs_amqps(self) -> RabbitMqEndpoint:
        if "tls" in self.model_fields_set and self.tls.enabled != self.url.startswith("amqps:"):
            raise PydanticCustomError(
                "rabbitmq_tls",
                "tls: is on exactly when the url is amqps:// (it is {url})",
                {"url": self.url},
            )
        if self.tls.server_name is not None:  # aiormq checks the URL's host, nothing else
            raise PydanticCustomError(
                "rabbitmq_tls", "tls.server_name is not supported: put that name in the url"
            )
        return self
