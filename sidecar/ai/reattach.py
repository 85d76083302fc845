"""Re-attachable chat calls: a retry with the same `idempotency-key` gets the same answer.

A chat call (Complete or StreamComplete) on an alias with `reattach:` that carries an
`idempotency-key` header runs in a task of its own, detached from its caller, and is
registered under (caller, key) while it runs. Each batch the route streams is kept, so any
caller attached to the call reads the answer from its first batch on, then live as it
comes; a second request with the same key (its client timed out, lost the connection, or
simply retried) attaches to the running call instead of sending a second upstream request.

Once the answer has finished, it is stored on the alias's cache service for `ttl`
(a `CachedAnswer` naming the digest of the request it answers) before the call leaves the
registry, so a retry after that is replayed from the cache, from any sidecar sharing it
(a Redis cache). A failed answer is not kept: a retry after a failure starts a new call.

- The key is checked (1 to 128 characters of `A-Z a-z 0-9 . _ ~ : + / = -`): it becomes part
  of a cache key. It is scoped by the caller's identity (`caller`, from its bearer token or
  client certificate), so one caller can never attach to, or replay, another's answer.
- The same key with a different request (a different digest of the normalised request,
  `ResponseCache.digest`) is refused with FAILED_PRECONDITION, IDEMPOTENCY_KEY_REUSED.
- A caller that goes away leaves the call running; a call with no caller attached for
  `detached_grace` is cancelled, which closes its upstream request and settles its budget.
- Bounds: at most `max_calls` keyed calls run at once per alias (more are refused with
  RESOURCE_EXHAUSTED, BULKHEAD_FULL), and a call keeps at most `max_buffered_bytes` of
  answer (a longer answer ends with RESOURCE_EXHAUSTED, VALUE_TOO_LARGE, for every caller
  attached, and its upstream request is closed).
- The call's admission and retry rounds use the first caller's deadline; once streaming,
  the upstream's own timeouts (first chunk, gap between chunks) bound it, and each
  caller's deadline bounds only that caller's wait.

Running calls are known only to the sidecar that runs them: a retry reaching another
sidecar before the answer finished starts a call there.

Usage:

    calls = CallRegistry("chat", cache, ReattachPolicy(ttl=600), clock)
    async for batch in calls.stream(key, caller, route, request, deadline, call, metrics):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final

from sidecar.ai.fallback import RoutedCall, stream_chat
from sidecar.ai.response_cache import CachedAnswer, ResponseCache
from sidecar.ai.route import Route
from sidecar.backends.ai.base import ChatEvent, ChatRequest, ToolCallDelta
from sidecar.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from sidecar.observability.genai_metrics import GenAIMetrics
from sidecar.resilience import Clock, Deadline

__all__ = ["KEY_FIELD", "MAX_KEY_LENGTH", "CallRegistry", "ReattachPolicy", "check_key"]

KEY_FIELD: Final = "idempotency-key"
"""The metadata header naming a call (also the field errors about it name)."""
MAX_KEY_LENGTH: Final = 128
_KEY: Final = re.compile(r"[A-Za-z0-9._~:+/=-]+")
_BUSY_RETRY_AFTER: Final = 1.0
"""Seconds a caller refused for too many keyed calls is told to wait."""


@dataclass(frozen=True, slots=True)
class ReattachPolicy:
    """How keyed calls of one alias are kept.

    Attributes:
        ttl: Seconds a finished answer stays on the cache service.
        detached_grace: Seconds a call with no caller attached keeps running.
        max_calls: Keyed calls running at once (this sidecar).
        max_buffered_bytes: Answer bytes kept per running call.
    """

    ttl: float = 600.0
    detached_grace: float = 30.0
    max_calls: int = 1000
    max_buffered_bytes: int = 1024 * 1024


def check_key(key: str) -> str:
    """`key` if it may name a call.

    Raises:
        InvalidArgument: Empty, longer than `MAX_KEY_LENGTH`, or other characters.
    """
    if len(key) > MAX_KEY_LENGTH:
        raise _bad_key(f"has at most {MAX_KEY_LENGTH} characters")
    if not _KEY.fullmatch(key):
        raise _bad_key("is 1 or more of the characters A-Z a-z 0-9 . _ ~ : + / = -")
    return key


def _bad_key(why: str) -> InvalidArgument:
    return InvalidArgument(
        f"{KEY_FIELD}: an idempotency key {why}",
        reason="INVALID_REQUEST",
        metadata={"field": KEY_FIELD},
    )


def _size(batch: list[ChatEvent]) -> int:
    """UTF-8 bytes of the batch's text and tool-call pieces (the end is a few fields)."""
    size = 0
    for event in batch:
        if isinstance(event, str):
            size += len(event.encode())
        elif isinstance(event, ToolCallDelta):
            size += len(event.id.encode()) + len(event.name.encode())
            size += len(event.arguments.encode())
    return size


class _Call:
    """One running keyed call: its batches so far, for every caller attached to it."""

    __slots__ = (
        "_changed",
        "attached",
        "batches",
        "digest",
        "done",
        "error",
        "expiry",
        "routed",
        "size",
        "task",
    )

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.batches: list[list[ChatEvent]] = []
        self.size = 0
        self.done = False
        self.error: BaseException | None = None
        self.routed = RoutedCall()
        self.attached = 0
        self.expiry: asyncio.Task[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def add(self, batch: list[ChatEvent], limit: int) -> None:
        """Keep one batch and wake the callers waiting for it.

        Raises:
            ResourceExhausted: The answer outgrew `limit`.
        """
        self.size += _size(batch)
        if self.size > limit:
            raise ResourceExhausted(
                f"the answer outgrew the {limit} bytes a re-attachable call keeps "
                "(reattach.max_buffered_bytes)",
                reason="VALUE_TOO_LARGE",
                metadata={"limit": str(limit)},
            )
        self.batches.append(batch)
        self._wake()

    def finish(self, error: BaseException | None) -> None:
        """The answer is complete (or failed with `error`)."""
        self.done, self.error = True, error
        self._wake()

    async def changed(self) -> None:
        """Wait for the next batch or the end."""
        await self._changed.wait()

    def _wake(self) -> None:
        # One event per change: every waiting caller wakes, later waiters wait anew.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class CallRegistry:
    """The keyed calls of one alias, running and (through its cache service) finished.

    Args:
        alias: The alias name (part of every stored key).
        cache: The alias's response cache: where finished answers are kept.
        policy: Times and bounds.
        clock: Time for the detached grace.
    """

    def __init__(
        self, alias: str, cache: ResponseCache, policy: ReattachPolicy, clock: Clock
    ) -> None:
        self._alias = alias
        self._cache = cache
        self._policy = policy
        self._clock = clock
        self._calls: dict[tuple[str, str], _Call] = {}

    @property
    def running(self) -> int:
        """Keyed calls registered now (for tests and reports)."""
        return len(self._calls)

    async def stream(
        self,
        key: str,
        caller: str,
        route: Route,
        request: ChatRequest,
        deadline: Deadline | None,
        call: RoutedCall,
        metrics: GenAIMetrics | None,
    ) -> AsyncGenerator[list[ChatEvent], None]:
        """The answer of the call named `key` by `caller`: replayed when it finished,
        attached to when it runs, else started (detached) and attached to.

        Raises:
            InvalidArgument: A key that may not name a call.
            FailedPrecondition: The key names a call of a different request.
            ResourceExhausted: Too many keyed calls run, or the answer outgrew its buffer.
            SidecarError: What the call failed with.
        """
        name = (caller, check_key(key))
        digest = self._cache.digest(route.deployments[0].prepare(request))
        running = self._calls.get(name)
        if running is None:
            stored = await self._cache.load(self._stored_key(name))
            if stored is not None:
                _same_request(stored.request, digest)
                call.cached, call.deployment, call.coalesce = True, stored.deployment, False
                for event in stored.events:
                    yield [event]
                return
            # Registered by another request with this key while the cache was read?
            running = self._calls.get(name) or self._start(
                name, digest, route, request, deadline, metrics
            )
        _same_request(running.digest, digest)
        async with contextlib.aclosing(self._follow(running, call)) as batches:
            async for batch in batches:
                yield batch

    def _stored_key(self, name: tuple[str, str]) -> str:
        caller, key = name
        return f"ai:reattach:{self._alias}:{caller or 'anonymous'}:{key}"

    def _start(
        self,
        name: tuple[str, str],
        digest: str,
        route: Route,
        request: ChatRequest,
        deadline: Deadline | None,
        metrics: GenAIMetrics | None,
    ) -> _Call:
        limit = self._policy.max_calls
        if len(self._calls) >= limit:
            raise ResourceExhausted(
                f"{limit} re-attachable calls already run on {self._alias!r} (reattach.max_calls)",
                reason="BULKHEAD_FULL",
                metadata={"target": self._alias, "limit": str(limit)},
                retry_after=_BUSY_RETRY_AFTER,
            )
        running = _Call(digest)
        self._calls[name] = running
        # The task copies this call's context (request id, trace, permissions), so the
        # upstream request still carries them after the caller has gone.
        running.task = asyncio.create_task(
            self._run(name, running, route, request, deadline, metrics),
            name=f"ai-reattach-{self._alias}",
        )
        return running

    async def _run(
        self,
        name: tuple[str, str],
        running: _Call,
        route: Route,
        request: ChatRequest,
        deadline: Deadline | None,
        metrics: GenAIMetrics | None,
    ) -> None:
        """Stream the call into `running`; store the finished answer, then unregister."""
        limit = self._policy.max_buffered_bytes
        try:
            stream = stream_chat(route, request, deadline, running.routed, metrics)
            async with contextlib.aclosing(stream):
                async for batch in stream:
                    running.add(batch, limit)
            running.finish(None)
            answer = CachedAnswer(
                [event for batch in running.batches for event in batch],
                running.routed.deployment,
                running.digest,
            )
            # Still registered while it is stored: a retry meanwhile attaches here.
            await self._cache.store(self._stored_key(name), answer, self._policy.ttl)
        except asyncio.CancelledError:
            if not running.done:  # not while a finished answer was being stored
                running.finish(
                    Unavailable(
                        "the re-attachable call was cancelled: no caller attached within "
                        "reattach.detached_grace",
                        reason="UPSTREAM_UNAVAILABLE",
                        metadata={"target": self._alias},
                    )
                )
            raise
        except Exception as exc:  # every attached caller gets it
            running.finish(exc)
        finally:
            if running.expiry is not None:
                running.expiry.cancel()
            if self._calls.get(name) is running:
                del self._calls[name]

    async def _follow(
        self, running: _Call, call: RoutedCall
    ) -> AsyncGenerator[list[ChatEvent], None]:
        """Every batch of `running` from the first, then live; leaving starts the grace."""
        running.attached += 1
        if running.expiry is not None:
            running.expiry.cancel()
            running.expiry = None
        try:
            index = 0
            while True:
                if index < len(running.batches):
                    batch = running.batches[index]
                    index += 1
                    routed = running.routed
                    call.deployment, call.cached = routed.deployment, routed.cached
                    call.coalesce = routed.coalesce
                    yield batch
                elif running.done:
                    if running.error is not None:
                        raise running.error
                    return
                else:
                    await running.changed()
        finally:
            running.attached -= 1
            if running.attached == 0 and not running.done:
                running.expiry = asyncio.create_task(self._expire(running))

    async def _expire(self, running: _Call) -> None:
        """Cancel `running` when no caller attached to it within the grace."""
        await self._clock.sleep(self._policy.detached_grace)
        if running.attached == 0 and running.task is not None:
            running.task.cancel()


def _same_request(held: str, digest: str) -> None:
    if held and held != digest:
        raise FailedPrecondition(
            f"{KEY_FIELD} is already used by a different request; send a new key for a new request",
            reason="IDEMPOTENCY_KEY_REUSED",
            metadata={"field": KEY_FIELD},
        )
