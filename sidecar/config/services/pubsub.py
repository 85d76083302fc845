"""`PubSubServiceConfig`: a publish/subscribe broker (`type: pubsub`), served by PubSub."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastOne
from .._units import Bytes, DurationSeconds, MiB
from .base import ServiceBase
from .redis import RedisConnectionSettings

__all__ = ["PubSubServiceConfig"]


class PubSubServiceConfig(RedisConnectionSettings, ServiceBase):
    """A publish/subscribe broker (PubSub service).

    Delivery is at-most-once (plain pub/sub) except for topics matching `reliable_topics`,
    which `backend: redis` carries on Redis Streams, at-least-once, with redelivery and a
    dead-letter stream. With `backend: redis` the connection settings of
    `RedisConnectionSettings` apply; the memory backend ignores them.
    """

    type: Literal["pubsub"] = Field(default="pubsub", description="Service type.")
    backend: str = Field(
        default="memory",
        description="Where messages flow: memory is per-process; redis is shared and uses the "
        "Redis connection settings. Default memory.",
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
        "delivered at-least-once on Redis Streams instead of plain pub/sub. Requires backend: "
        "redis. Default [] (every topic is plain pub/sub).",
    )
    max_stream_length: AtLeastOne = Field(
        default=100_000,
        description="Entries kept per reliable topic's stream; older ones are trimmed "
        "(approximately, XADD MAXLEN ~). Default 100000.",
    )
    visibility_timeout: DurationSeconds = Field(
        default=30.0,
        description="How long a delivered reliable message may stay unacknowledged before it "
        "is delivered again. Default 30s.",
    )
    max_deliveries: AtLeastOne = Field(
        default=5,
        description="Deliveries of one reliable message, redeliveries included, after which it "
        "moves to the topic's dead-letter stream instead. Default 5.",
    )

    @field_validator("reliable_topics")
    @classmethod
    def _reliable_topics_need_redis(
        cls, topics: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        if topics and info.data.get("backend", "redis") != "redis":
            raise PydanticCustomError(
                "reliable_topics_need_redis", "reliable topics need backend: redis"
            )
        return topics
