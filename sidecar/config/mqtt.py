"""`MqttEndpoint`: how a connection reaches an MQTT broker (plain pub/sub services).

    connections:
      devices:
        type: mqtt
        url: mqtts://mqtt.internal:8883     # mqtt:// or mqtts:// (TLS)
        username: sidecar
        password: ${MQTT_PASSWORD}
        topic_prefix: "app1/"
        qos: 1                              # 0: at most once; 1: at least once to the broker
        retain: false                       # publish retained messages
        keepalive: 30s

MQTT has no consumer groups or dead letters: a pub/sub service on it serves plain channels
only (`reliable_topics` is refused).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._common import ConfigModel
from ._units import DurationSeconds
from .rabbitmq import broker_url_problem
from .tls import TlsConfig

__all__ = ["MqttEndpoint"]


class MqttEndpoint(ConfigModel):
    """An MQTT broker: one client session shared by every service naming it."""

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        max_length=2048,
        description="mqtt://host[:port] or mqtts://host[:port] (TLS). Default "
        "mqtt://127.0.0.1:1883.",
    )
    username: str | None = Field(default=None, max_length=255, description="Default none.")
    password: SecretStr | None = Field(
        default=None, description="Write it as a ${ENV} reference. Default none."
    )
    topic_prefix: str = Field(
        default="",
        max_length=200,
        description="Prepended to every MQTT topic, so several apps can share one broker "
        "(say 'app1/'); no wildcards. Default '' (no prefix).",
    )
    qos: Literal[0, 1] = Field(
        default=0,
        description="QoS of publishing and subscribing: 0 at most once; 1 the broker "
        "acknowledges each publish (Publish returns after PUBACK) and redelivers to "
        "subscribers over a broken link. Default 0.",
    )
    retain: bool = Field(
        default=False,
        description="Publish retained messages: the broker keeps the last one per topic and "
        "hands it to each new subscriber of that topic. Default false.",
    )
    keepalive: DurationSeconds = Field(
        default=30.0, description="MQTT keep-alive: a silent link is declared dead after 1.5x."
    )
    reconnect_interval: DurationSeconds = Field(
        default=1.0,
        description="Seconds between reconnection attempts; subscriptions resume once the "
        "link is back. Default 1s.",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS settings for an mqtts:// URL. Default: the system's CAs.",
    )

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        problem = broker_url_problem(value, ("mqtt", "mqtts"))
        if problem is not None:
            raise PydanticCustomError("mqtt_url", problem)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _no_wildcards(cls, value: str) -> str:
        if any(c in value for c in "+#\x00"):
            raise PydanticCustomError("mqtt_topic_prefix", "may not hold '+', '#' or NUL")
        return value

    @model_validator(mode="after")
    def _credentials_together(self) -> MqttEndpoint:
        if self.password is not None and self.username is None:
            raise PydanticCustomError("mqtt_auth", "password needs username")
        if "tls" in self.model_fields_set and self.tls.enabled != self.url.startswith("mqtts:"):
            raise PydanticCustomError("mqtt_tls", "tls: is on exactly when the url is mqtts://")
        return self

    @property
    def tls_on(self) -> bool:
        """Whether the link speaks TLS."""
        return self.url.startswith("mqtts:")
