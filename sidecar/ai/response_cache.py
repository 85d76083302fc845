"""The response cache of an alias: deterministic answers stored on a `cache` service.

Only deterministic requests are cached: temperature 0, or a seed set. The key is a SHA-256
of the normalised request (the alias, messages, tools, tool choice, response format and
sampling settings after defaults; not `user` or `metadata`, which do not change the
answer). The entry keeps the streamed text pieces as they arrived, so a cached answer is
replayed as the same stream, not as one lump.

The cache is an optimisation: a cache that is down, slow or full never fails the call; the
answer is then served (and counted) as a miss.

Re-attachable calls (`sidecar.ai.reattach`) keep their finished answers on the same cache,
under keys of their own (`load`/`store`), each entry naming the digest of the request it
answers.

Usage:

    cache = ResponseCache("chat", integration, ttl=3600)
    hit = await cache.get(request)            # None on a miss
    await cache.put(request, answer)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sidecar.backends.ai.base import (
    ChatEnd,
    ChatEvent,
    ChatRequest,
    FinishReason,
    ToolCallDelta,
    Usage,
)

__all__ = ["CachedAnswer", "Recorder", "ResponseCache", "is_deterministic"]

_log = logging.getLogger("sidecar.ai.cache")
_VERSION = 1


def is_deterministic(request: ChatRequest) -> bool:
    """Whether the same request may get the same answer: temperature 0 or a seed."""
    return request.temperature == 0 or request.seed is not None


def _normalised(alias: str, request: ChatRequest) -> bytes:
    messages = [
        [
            message.role.value,
            [p if isinstance(p, str) else ["image", p.url, p.detail] for p in message.content],
            message.name,
            [[c.id, c.name, c.arguments] for c in message.tool_calls],
            message.tool_call_id,
        ]
        for message in request.messages
    ]
    tools = [[t.name, t.description, t.parameters, t.strict] for t in request.tools]
    choice = request.tool_choice
    fmt = request.response_format
    document = [
        _VERSION,
        alias,
        messages,
        tools,
        [choice.mode, choice.name] if choice else None,
        [fmt.type, fmt.name, fmt.schema, fmt.strict] if fmt else None,
        request.temperature,
        request.top_p,
        request.max_tokens,
        list(request.stop),
        request.seed,
    ]
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class CachedAnswer:
    """A complete answer as it streamed: text pieces, tool-call deltas and the end.

    Attributes:
        request: The digest of the request answered (`ResponseCache.digest`); "" when the
            key already is one.
    """

    events: list[ChatEvent]
    deployment: str
    request: str = ""

    def to_bytes(self) -> bytes:
        """The stored form (compact JSON)."""
        items: list[Any] = []
        for event in self.events:
            if isinstance(event, str):
                items.append(event)
            elif isinstance(event, ToolCallDelta):
                items.append(["t", event.index, event.id, event.name, event.arguments])
            else:
                usage = (
                    [event.usage.input_tokens, event.usage.output_tokens] if event.usage else None
                )
                items.append(
                    ["e", event.finish_reason.value, usage, event.model, event.response_id]
                )
        document = {"v": _VERSION, "d": self.deployment, "events": items}
        if self.request:
            document["r"] = self.request
        return json.dumps(document).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedAnswer:
        """Parse a stored entry.

        Raises:
            ValueError: The entry is not one this version wrote.
        """
        document = json.loads(data)
        if document.get("v") != _VERSION:
            raise ValueError("unknown cache entry version")
        events: list[ChatEvent] = []
        for item in document["events"]:
            if isinstance(item, str):
                events.append(item)
            elif item[0] == "t":
                events.append(ToolCallDelta(item[1], item[2], item[3], item[4]))
            else:
                usage = Usage(*item[2]) if item[2] else None
                events.append(ChatEnd(FinishReason(item[1]), usage, item[3], item[4]))
        if not events or not isinstance(events[-1], ChatEnd):
            raise ValueError("cache entry has no end")
        return cls(events, document.get("d", ""), document.get("r", ""))


@dataclass
class Recorder:
    """Collects a stream's events as they pass, to store them once the answer completes."""

    events: list[ChatEvent] = field(default_factory=list)

    def add(self, batch: list[ChatEvent]) -> None:
        """Remember one batch."""
        self.events.extend(batch)


class ResponseCache:
    """Stores deterministic answers of one alias on a cache integration.

    Args:
        alias: The alias name (part of every key).
        integration: The `cache` integration (its backend and pipeline are used).
        ttl: Seconds an answer lives.
    """

    def __init__(self, alias: str, integration: Any, ttl: float) -> None:
        self._alias = alias
        self._integration = integration
        self._ttl = ttl
        self._limit: int | None = getattr(integration.settings, "max_value_size", None)

    @property
    def target(self) -> str:
        """The cache service's name."""
        name: str = self._integration.name
        return name

    def digest(self, request: ChatRequest) -> str:
        """SHA-256 (hex) of a (defaults-applied) request's normalised form."""
        return hashlib.sha256(_normalised(self._alias, request)).hexdigest()

    def key(self, request: ChatRequest) -> str:
        """The cache key of a (defaults-applied) request."""
        return f"ai:response:{self._alias}:{self.digest(request)}"

    async def get(self, request: ChatRequest) -> CachedAnswer | None:
        """The stored answer, or None (also when the cache fails)."""
        return await self.load(self.key(request))

    async def put(self, request: ChatRequest, answer: CachedAnswer) -> None:
        """Store a complete answer; too large or failing writes are skipped."""
        await self.store(self.key(request), answer, self._ttl)

    async def load(self, key: str) -> CachedAnswer | None:
        """The answer stored under `key`, or None (also when the cache fails)."""
        backend = self._integration.backend
        try:
            data = await self._integration.pipeline.execute(lambda: backend.get(key))
            return CachedAnswer.from_bytes(data) if data is not None else None
        except Exception as exc:
            _log.warning(
                "response cache read failed", extra={"alias": self._alias, "error": repr(exc)}
            )
            return None

    async def store(self, key: str, answer: CachedAnswer, ttl: float) -> None:
        """Store `answer` under `key` for `ttl` seconds; too large or failing writes are
        skipped."""
        data = answer.to_bytes()
        if self._limit is not None and len(data) > self._limit:
            return
        backend = self._integration.backend
        try:
            await self._integration.pipeline.execute(lambda: backend.set(key, data, ttl=ttl))
        except Exception as exc:
            _log.warning(
                "response cache write failed", extra={"alias": self._alias, "error": repr(exc)}
            )
