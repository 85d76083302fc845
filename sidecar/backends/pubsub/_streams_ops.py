"""The Redis commands of reliable topics, one method per step, with Redis errors mapped to
domain errors. `RedisStreams` and its consumers build on these; nothing here keeps state
beyond the clients and the settings.

Blocking reads (`XREADGROUP ... BLOCK`) go through a connection pool of their own, so
subscribers waiting for messages never hold the connections that publishes and
acknowledgements need.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from sidecar.backends.pubsub import _streams_codec as codec
from sidecar.backends.pubsub._streams_lua import CLAIM, LEAVE, REPLAY
from sidecar.backends.pubsub.reliable import (
    DeadLetter,
    Outgoing,
    ReliableMessage,
    Replayed,
    ReplayOutcome,
)
from sidecar.connections.redis.client import redis_errors

__all__ = ["Claimed", "StreamOps"]

_DEAD_LETTER_SUFFIX = ":dlq"


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one CLAIM step did on one topic.

    Attributes:
        messages: the deliveries it handed to the consumer.
        dead_lettered: messages it moved to the dead letters.
        scanned: pending entries it looked at (fewer than asked: the range is exhausted).
        last_id: the last entry it looked at, where the next page starts.
    """

    messages: tuple[ReliableMessage, ...]
    dead_lettered: int
    scanned: int
    last_id: str


def _is_nogroup(exc: ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")


def _blocking_client(client: aioredis.Redis, block_seconds: float) -> aioredis.Redis:
    """A client on its own pool, with the settings of `client`, for blocking reads.

    Its socket timeout outlasts the longest BLOCK, so an idle subscriber is never mistaken
    for a dead connection.
    """
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    timeout = kwargs.get("socket_timeout")
    kwargs["socket_timeout"] = max(timeout or 0.0, block_seconds + 10.0)
    # from_pool: closing the client closes the pool (and its connections) too.
    return aioredis.Redis.from_pool(
        aioredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


class StreamOps:
    """The Redis side of reliable topics.

    Args:
        client: for every non-blocking command; owned by the caller.
        name: the service name, reported as `target` in errors.
        key_prefix: prepended to every stream key.
        max_len: entries kept per stream (approximately: `MAXLEN ~`), dead letters included.
        max_deliveries: deliveries after which a message is dead-lettered.
        block_seconds: the longest a blocking read waits.
        wall_clock: seconds since the epoch, for `published_at` and `dead.at_ms`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        name: str,
        key_prefix: str,
        max_len: int,
        max_deliveries: int,
        block_seconds: float,
        wall_clock: Any = time.time,
    ) -> None:
        self.dead_lettered = 0
        """Messages the CLAIM script moved to the dead letters so far."""
        self._client = client
        self._errors = redis_errors(name)
        self._reader = _blocking_client(client, block_seconds)
        self._prefix = key_prefix
        self._max_len = max_len
        self.max_deliveries = max_deliveries
        self._wall_clock = wall_clock
        self._claim = client.register_script(CLAIM)
        self._replay = client.register_script(REPLAY)
        self._leave = client.register_script(LEAVE)

    def key(self, topic: str) -> str:
        """The stream key of `topic`."""
        return self._prefix + topic

    def dead_key(self, topic: str) -> str:
        """The key of the dead-letter stream of `topic`."""
        return self._prefix + topic + _DEAD_LETTER_SUFFIX

    async def close(self) -> None:
        """Close the blocking-read pool (the shared client belongs to the caller)."""
        await self._reader.aclose()

    async def ping(self) -> None:
        """PING Redis (through the shared client)."""
        with self._errors:
            await self._client.ping()

    async def append(self, topic: str, payload: bytes, metadata: Mapping[str, str] | None) -> str:
        """XADD a message to the topic's stream, trimming it to about `max_len` entries."""
        fields = codec.encode(payload, metadata, int(self._wall_clock() * 1000))
        with self._errors:
            entry_id = await self._client.xadd(
                self.key(topic), fields, maxlen=self._max_len, approximate=True
            )
        return codec.text(entry_id)

    async def append_many(self, messages: Sequence[Outgoing]) -> list[str]:
        """XADD every message in one pipeline (one round trip), in order; their ids."""
        published_ms = int(self._wall_clock() * 1000)
        with self._errors:
            async with self._client.pipeline(transaction=False) as pipe:
                for topic, payload, metadata in messages:
                    pipe.xadd(
                        self.key(topic),
                        codec.encode(payload, metadata, published_ms),
                        maxlen=self._max_len,
                        approximate=True,
                    )
                entry_ids = await pipe.execute()
        return [codec.text(entry_id) for entry_id in entry_ids]

    async def ensure_groups(self, topics: Sequence[str], group: str) -> None:
        """Create `group` on each topic (and the stream if missing), reading from the start."""
        for topic in topics:
            with self._errors:
                try:
                    await self._client.xgroup_create(self.key(topic), group, id="0", mkstream=True)
                except ResponseError as exc:
                    if not str(exc).startswith("BUSYGROUP"):
                        raise

    async def acknowledge(self, topic: str, group: str, ids: Sequence[str]) -> int:
        """XACK `ids`; the number that were pending."""
        with self._errors:
            return int(await self._client.xack(self.key(topic), group, *ids))

    async def claim(
        self,
        topic: str,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int,
        start: str = "-",
        end: str = "+",
        scan: int,
        room: int,
        owner_only: bool,
    ) -> Claimed:
        """Run the CLAIM script: take idle pending messages, dead-letter worn-out ones."""
        keys = [self.key(topic), self.dead_key(topic)]
        args: list[Any] = [
            group,
            consumer,
            min_idle_ms,
            start,
            end,
            scan,
            room,
            self.max_deliveries,
            "1" if owner_only else "0",
            self._max_len,
            int(self._wall_clock() * 1000),
        ]
        with self._errors:
            try:
                reply = await self._claim(keys=keys, args=args)
            except ResponseError as exc:
                if not _is_nogroup(exc):
                    raise
                await self.ensure_groups([topic], group)
                return Claimed((), 0, 0, "")
        entries, dead_lettered, scanned, last_id = reply
        messages = tuple(
            codec.message(topic, entry_id, fields, int(count))
            for entry_id, fields, count in entries
        )
        self.dead_lettered += int(dead_lettered)
        return Claimed(messages, int(dead_lettered), int(scanned), codec.text(last_id))

    async def read_new(
        self, topics: Sequence[str], group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[ReliableMessage]:
        """XREADGROUP `>`: up to `count` never-delivered messages per topic, waiting up to
        `block_ms` for the first."""
        streams: dict[Any, Any] = {self.key(topic): ">" for topic in topics}
        by_key = {self.key(topic): topic for topic in topics}
        with self._errors:
            try:
                reply = await self._reader.xreadgroup(
                    group, consumer, streams, count=count, block=max(1, block_ms)
                )
            except ResponseError as exc:
                if not _is_nogroup(exc):
                    raise
                await self.ensure_groups(topics, group)
                return []
        items = reply.items() if isinstance(reply, Mapping) else reply or []
        messages: list[ReliableMessage] = []
        for key, entries in items:
            topic = by_key[codec.text(key)]
            for entry in entries or []:
                entry_id, fields = entry[0], entry[1]
                if fields is not None:  # an entry deleted after delivery has no fields
                    messages.append(codec.message(topic, entry_id, fields, 1))
        return messages

    async def held(
        self, topic: str, group: str, consumer: str, low: str, high: str, count: int
    ) -> set[str]:
        """Ids between `low` and `high` still pending to `consumer` (at most `count`)."""
        with self._errors:
            try:
                rows = await self._client.xpending_range(
                    self.key(topic), group, low, high, count, consumername=consumer
                )
            except ResponseError as exc:
                if not _is_nogroup(exc):
                    raise
                return set()
        return {codec.text(row["message_id"]) for row in rows}

    async def leave(self, topic: str, group: str, consumer: str) -> bool:
        """Remove `consumer` from the group if it holds nothing; whether it was removed."""
        with self._errors:
            return bool(await self._leave(keys=[self.key(topic)], args=[group, consumer]))

    async def dead_letters(self, topic: str, after: str | None, count: int) -> list[DeadLetter]:
        """XRANGE the dead-letter stream from just after `after` (None: the start)."""
        start = f"({after}" if after else "-"
        with self._errors:
            entries = await self._client.xrange(self.dead_key(topic), start, "+", count=count)
        return [codec.dead_letter(topic, entry_id, fields) for entry_id, fields in entries or ()]

    async def replay(self, topic: str, ids: Sequence[str] | None, limit: int) -> ReplayOutcome:
        """Run the REPLAY script: dead letters back onto the topic as new messages."""
        keys = [self.key(topic), self.dead_key(topic)]
        with self._errors:
            replayed, missing, remaining = await self._replay(
                keys=keys, args=[self._max_len, limit, *(ids or ())]
            )
        return ReplayOutcome(
            replayed=tuple(Replayed(codec.text(old), codec.text(new)) for old, new in replayed),
            not_found=tuple(codec.text(entry_id) for entry_id in missing),
            remaining=int(remaining),
        )
