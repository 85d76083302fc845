"""`KafkaEndpoint`: how a connection reaches a Kafka-protocol cluster (pub/sub services).

    connections:
      events-kafka:
        type: kafka
        bootstrap_servers: [kafka-0.internal:9092, kafka-1.internal:9092]
        topic_prefix: "app1."           # prepended to every topic this sidecar uses
        topic_partitions: 6             # partitions of the topics the sidecar creates
        replication_factor: 3
        session_timeout: 10s
        heartbeat_interval: 1s
        tls: {ca_file: /etc/ssl/internal-ca.pem}

Topics are created by the sidecar on first use with `topic_partitions` and
`replication_factor`; a topic that already exists is used as it is.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._common import ConfigModel
from ._units import DurationSeconds
from .tls import TlsConfig

__all__ = ["KafkaEndpoint"]

_SERVER = re.compile(r"\A[A-Za-z0-9._\-\[\]:]{1,253}:[0-9]{1,5}\Z")
_TOPIC_CHARS = re.compile(r"\A[A-Za-z0-9._\-]*\Z")


class KafkaEndpoint(ConfigModel):
    """A Kafka-protocol cluster: one producer shared by every service naming it."""

    bootstrap_servers: tuple[str, ...] = Field(
        default=("127.0.0.1:9092",),
        min_length=1,
        max_length=64,
        description="host:port of one or more brokers to learn the cluster from. Default "
        "[127.0.0.1:9092].",
    )
    client_id: str = Field(
        default="sidecar", min_length=1, max_length=255, description="Default sidecar."
    )
    topic_prefix: str = Field(
        default="",
        max_length=100,
        description="Prepended to every Kafka topic name, so several apps can share one "
        "cluster; letters, digits, '.', '_' and '-'. Default '' (no prefix).",
    )
    topic_partitions: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="Partitions of each topic the sidecar creates (ordering holds within a "
        "partition; more partitions let more consumers of one group share a topic). "
        "Default 1.",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Replicas of each topic the sidecar creates. Default 1.",
    )
    session_timeout: DurationSeconds = Field(
        default=10.0,
        description="A group consumer silent this long is dropped from its group and its "
        "partitions go to the others (Kafka's session.timeout.ms). Default 10s.",
    )
    heartbeat_interval: DurationSeconds = Field(
        default=1.0,
        description="How often group consumers heartbeat, and so how soon they learn of a "
        "rebalance (heartbeat.interval.ms); below a third of session_timeout. Default 1s.",
    )
    pattern_refresh: DurationSeconds = Field(
        default=5.0,
        description="How often plain pattern subscriptions look for new matching topics "
        "created by other publishers (topics this sidecar creates are seen at once). "
        "Default 5s.",
    )
    reconnect_backoff: DurationSeconds = Field(
        default=0.5,
        description="Seconds between attempts to reach a broker that went away. Default 0.5s.",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS to the brokers: ca_file, cert_file/key_file, verify. Default off.",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for server in value:
            if not _SERVER.match(server):
                raise PydanticCustomError(
                    "kafka_server", "{server!r} is not host:port", {"server": server}
                )
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _legal_prefix(cls, value: str) -> str:
        if not _TOPIC_CHARS.match(value):
            raise PydanticCustomError(
                "kafka_topic_prefix", "may hold only letters, digits, '.', '_' and '-'"
            )
        return value

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaEndpoint:
        if self.heartbeat_interval * 3 > self.session_timeout:
            raise PydanticCustomError(
                "kafka_heartbeat", "heartbeat_interval must be at most a third of session_timeout"
            )
        return self
