"""`NatsEndpoint`: how a connection reaches a NATS server (with JetStream for reliable topics).

    connections:
      events-nats:
        type: nats
        url: tls://nats.internal:4222           # nats:// or tls://; several: a, b, c
        username: sidecar                       # or token:
        password: ${NATS_PASSWORD}
        tls: {ca_file: /etc/ssl/internal-ca.pem}
        reconnect_interval: 1s

`tls://` speaks TLS (the system's CAs unless `tls:` says otherwise). Several servers of one
cluster are one comma-separated `url`; the client fails over between them.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._common import ConfigModel
from ._units import DurationSeconds
from .rabbitmq import broker_url_problem
from .tls import TlsConfig

__all__ = ["NatsEndpoint"]


class NatsEndpoint(ConfigModel):
    """A NATS server or cluster: one client connection shared by every service naming it."""

    url: str = Field(
        default="nats://127.0.0.1:4222",
        max_length=4096,
        description="nats://host[:port] or tls://host[:port]; a comma-separated list for a "
        "cluster. Default nats://127.0.0.1:4222.",
    )
    username: str | None = Field(default=None, max_length=255, description="Default none.")
    password: SecretStr | None = Field(
        default=None, description="Write it as a ${ENV} reference. Default none."
    )
    token: SecretStr | None = Field(
        default=None, description="Token authentication, instead of username. Default none."
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS settings for tls:// URLs: ca_file, cert_file/key_file, verify, "
        "server_name. Default: the system's CAs.",
    )
    reconnect_interval: DurationSeconds = Field(
        default=1.0,
        description="Seconds between reconnection attempts after the link is lost; open "
        "subscriptions and consumers resume once it is back. Default 1s.",
    )

    @field_validator("url")
    @classmethod
    def _nats_urls(cls, value: str) -> str:
        for server in value.split(","):
            problem = broker_url_problem(server.strip(), ("nats", "tls"))
            if problem is not None:
                raise PydanticCustomError(
                    "nats_url", "{server} {problem}", {"server": server.strip(), "problem": problem}
                )
        return value

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> NatsEndpoint:
        if self.token is not None and self.username is not None:
            raise PydanticCustomError("nats_auth", "set username/password or token, not both")
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError("nats_auth", "username and password go together")
        return self

    def servers(self) -> list[str]:
        """The URLs of `url`, one per server."""
        return [server.strip() for server in self.url.split(",")]
