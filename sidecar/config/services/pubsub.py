"""`PubSubServiceConfig`: a publish/subscribe broker (`type: pubsub`), served by PubSub.

Where messages flow is the `backend:`. The in-process one needs nothing; every other one
runs on a connection of its type, named under `connections:` (shared by the services naming
it) or made from the inline settings of the service itself (a connection of its own):

    connections:
      events-mq: {type: rabbitmq, url: amqp://mq.internal:5672/, password: ${MQ_PASSWORD}}
      events-nats: {type: nats, url: nats://nats.internal:4222}
    services:
      local: {type: pubsub}                                    # backend: memory
      cache-bus: {type: pubsub, backend: redis, host: redis.internal}    # inline redis
      orders:
        type: pubsub
        connection: events-mq            # backend: rabbitmq, inferred from the connection
        reliable_topics: ["orders.*"]    # at-least-once, consumer groups, dead letters
        visibility_timeout: 30s
        max_deliveries: 5
      metrics: {type: pubsub, backend: nats, url: nats://127.0.0.1:4222}   # inline broker

How a broker backend plugs in (the pattern every broker follows):

- its connection type: an endpoint model in `config/<type>.py`, a `<Type>ConnectionConfig`
  in `config/connections.py` (union + CONNECTION_TYPES), an opener in
  `connections/__init__.OPENERS`, and one line per table in `config/backends.py`
  (BACKENDS and BACKEND_CONNECTIONS: `("pubsub", "<type>"): "<type>"`);
- inline settings: `url:` here, for brokers whose endpoint is one URL (rabbitmq, nats), and
  the opener builds its endpoint from it; the Redis backend keeps its host/port fields; a
  broker configured by other keys (say, Kafka's bootstrap servers) adds them below the same
  way, refused for the other backends in `_only_with_redis` (which checks every backend);
- reliable topics: the backend's spec lists the `reliable` feature, and its name joins
  `RELIABLE_BACKENDS` below (a test checks the two agree), so that `reliable_topics` on a
  backend without them fails at load rather than at the first Publish.

Delivery is at-most-once (plain pub/sub) except for topics matching `reliable_topics`, which
are at-least-once with redelivery after `visibility_timeout` and a dead-letter log after
`max_deliveries` on every backend of `RELIABLE_BACKENDS`.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastOne
from .._units import Bytes, DurationSeconds, MiB
from ..kafka import KafkaEndpoint
from ..mqtt import MqttEndpoint
from ..nats import NatsEndpoint
from ..rabbitmq import RabbitMqEndpoint
from .base import ServiceBase
from .redis import RedisConnectionSettings, RedisEndpoint

__all__ = ["BROKER_URL_BACKENDS", "RELIABLE_BACKENDS", "PubSubServiceConfig"]

RELIABLE_BACKENDS: Final = frozenset({"redis", "rabbitmq", "nats", "kafka"})
"""The backends with reliable topics: those whose spec lists the `reliable` feature."""

BROKER_URL_BACKENDS: Final = {
    "rabbitmq": RabbitMqEndpoint,
    "nats": NatsEndpoint,
    # mqtt takes an inline `url:` too; kafka takes none (its model refuses `url`), so a
    # kafka service names a connection (or runs on its defaults, 127.0.0.1:9092).
    "mqtt": MqttEndpoint,
    "kafka": KafkaEndpoint,
}
"""The backends whose inline settings are one `url:`, and the endpoint model checking it."""

_REDIS_ENDPOINT_FIELDS: Final = frozenset(RedisEndpoint.model_fields)


class PubSubServiceConfig(RedisConnectionSettings, ServiceBase):
    """A publish/subscribe broker (PubSub service); see the module docstring."""

    type: Literal["pubsub"] = Field(default="pubsub", description="Service type.")
    backend: str = Field(
        default="memory",
        description="Where messages flow: memory is per-process; redis, rabbitmq and nats are "
        "shared and run on a connection of that type (connection:, or inline settings). "
        "Default memory.",
    )
    url: str | None = Field(
        default=None,
        max_length=4096,
        description="Inline broker URL, e.g. for backend rabbitmq (amqp[s]://host[:port][/vhost]) "
        "or nats (nats://host[:port]): a connection of this service's own, with the defaults "
        "of that connection type. Use connections: for credentials and TLS. Default null.",
    )
    subscriber_buffer: AtLeastOne = Field(
        default=1000,
        description="Messages buffered per slow subscriber before it starts losing them, so "
        "one slow reader cannot stall publishers. Default 1000.",
    )
    max_payload_size: Bytes = Field(
        default=1 * MiB, description="Largest message payload accepted. Default 1MiB."
    )
    reliable_topics: tuple[str, ...] = Field(
        default=(),
        description="Glob patterns (Redis syntax, as in subscriptions: 'orders.*') of topics "
        "delivered at-least-once (Redis Streams, RabbitMQ quorum queues, NATS JetStream) "
        "instead of plain pub/sub. Requires a backend with reliable topics (redis, rabbitmq, "
        "nats). Default [] (every topic is plain pub/sub).",
    )
    max_stream_length: AtLeastOne = Field(
        default=100_000,
        description="Messages kept per reliable topic: Redis stream entries (XADD MAXLEN ~), "
        "NATS stream messages, RabbitMQ queue length per group (oldest dropped). "
        "Default 100000.",
    )
    visibility_timeout: DurationSeconds = Field(
        default=30.0,
        description="How long a delivered reliable message may stay unacknowledged before it "
        "is delivered again. Default 30s.",
    )
    max_deliveries: AtLeastOne = Field(
        default=5,
        description="Deliveries of one reliable message, redeliveries included, after which it "
        "moves to the topic's dead letters instead. Default 5.",
    )

    @model_validator(mode="before")
    @classmethod
    def _endpoint_means_redis(cls, data: Any) -> Any:
        """Redis's inference (host/port/connection without backend mean redis), except that
        a `url:` names no Redis setting and a `connection:` may name any broker (the config
        infers the backend from the connection's type before this runs)."""
        if isinstance(data, dict) and "url" in data and "backend" not in data:
            return data
        redis_inference: Any = super()._endpoint_means_redis  # a descriptor proxy to mypy
        return redis_inference(data)

    @model_validator(mode="after")
    def _only_with_redis(self) -> PubSubServiceConfig:
        """Each backend's connection settings only with that backend (so a forgotten
        `backend:` never silently runs in memory)."""
        if self.backend == "redis" or self.backend not in BROKER_URL_BACKENDS:
            if self.url is not None:
                raise PydanticCustomError(
                    "url_without_broker",
                    "url is only for a broker backend ({backends})",
                    {"backends": ", ".join(BROKER_URL_BACKENDS)},
                )
            # Redis's own rules (a descriptor proxy to mypy, a bound validator at run time).
            redis_rules: Any = super()._only_with_redis
            checked: PubSubServiceConfig = redis_rules()
            return checked
        misplaced = sorted(_REDIS_ENDPOINT_FIELDS & self.model_fields_set)
        if misplaced:
            raise PydanticCustomError(
                "redis_setting_without_redis",
                "{names} {verb} only for backend: redis",
                {"names": ", ".join(misplaced), "verb": "is" if len(misplaced) == 1 else "are"},
            )
        if self.url is not None:
            if self.connection is not None:
                raise PydanticCustomError(
                    "inline_url_with_connection",
                    "url is set by connection {connection}; remove it here",
                    {"connection": repr(self.connection)},
                )
            BROKER_URL_BACKENDS[self.backend](url=self.url)  # its errors name the problem
        return self

    @field_validator("reliable_topics")
    @classmethod
    def _reliable_topics_need_a_reliable_backend(
        cls, topics: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        backend = info.data.get("backend", "redis")
        if topics and backend not in RELIABLE_BACKENDS:
            raise PydanticCustomError(
                "reliable_topics_unsupported",
                "backend {backend} has no reliable topics (they need one of: {backends})",
                {"backend": backend, "backends": ", ".join(sorted(RELIABLE_BACKENDS))},
            )
        return topics
