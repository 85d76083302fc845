"""`RedisTokenBucket`: one token bucket shared by every sidecar of a deployment, on Redis.

A per-pod bucket lets N pods send N times the limit; an upstream quota (an API's 100
requests per second, a database's connection budget) is per deployment. So the bucket's
state (tokens, last refill) lives in one Redis hash, and one Lua script refills and takes
atomically, on the Redis server's clock (TIME), so the sidecars' own clocks never matter.

Waiting is by reservation, not polling: when the tokens are not there yet, the script takes
them anyway (the balance goes negative, a debt) if the refill will cover them within the
caller's allowed wait, and answers how long to wait; the caller sleeps that long and goes.
One round trip per call, FIFO across all sidecars, no retry storm against Redis. When the
wait would pass the caller's deadline (or the allowed queue), the script takes nothing and
the caller gets `RateLimitedError(retry_after=wait)` at once. A caller that may not wait at
all (its deadline is now: an AI alias deciding whether to move to its next deployment) is
answered by Redis all the same: it gets the tokens that are there, or the refusal. A caller
cancelled while it waits does not give its tokens back (the upstream sees fewer calls, never
more).

`max_queue` keeps its meaning from the local bucket: at most that many callers of this
sidecar wait at once, and the shared debt never exceeds `max_queue` tokens.

When Redis cannot be reached the limiter *fails open to a local bucket*: each sidecar falls
back to its own `TokenBucket` with the same rate and burst for `fallback_cooldown` seconds,
then tries Redis again. The limit then holds per pod rather than per deployment, but calls
keep flowing: a rate limit protects an upstream from overload and must not become a second
point of failure (Envoy's global rate limit fails open by default for the same reason).
The switch is logged once per outage, and so is the way back.

Weighted limits (LLM tokens) are settled after the call with `adjust(delta)`, as with a local
`TokenBucket`: the estimate taken at admission is corrected by the real usage, a refund when
`delta` < 0, a further charge (possibly a debt the next callers wait out) when > 0. The
correction is one script run (refill, then add or take, atomically), sent in the background
because the pipeline settles synchronously; `settled()` waits for those in flight. While
degraded, corrections go to the local fallback.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from typing import Any, Final

from redis.exceptions import RedisError, ResponseError

from sidecar.connections.redis import RedisConnection
from sidecar.resilience import (
    SYSTEM_CLOCK,
    Clock,
    Deadline,
    RateLimitedError,
    RateLimiter,
    RateLimiterSnapshot,
    TokenBucket,
    TokenBucketOptions,
)

__all__ = ["RedisTokenBucket"]

_log = logging.getLogger("sidecar.backends.redis")

ROUND_TRIP: Final = 0.5
"""Seconds a caller with less time left still waits for Redis's answer; a slower answer
counts as Redis failing (the local fallback takes over)."""

# Both scripts: KEYS[1] is the bucket (a hash: tokens, ts), ARGV[1] and ARGV[2] its rate and
# capacity. They share the refill (on the Redis server's clock) and the store; numbers go back
# as strings, since Redis would truncate Lua numbers to integers.
_REFILL = """
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then tokens, ts = capacity, now end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
"""
_STORE = """
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.17g', ts))
-- Once the refill would have filled it again, the bucket may as well not exist.
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
"""


class _Script:
    """A Lua script and its digest (run by digest, loaded once when Redis lacks it)."""

    __slots__ = ("lua", "sha")

    def __init__(self, lua: str) -> None:
        self.lua = lua
        self.sha = hashlib.sha1(lua.encode()).hexdigest()


# ARGV[3], ARGV[4]: weight, max_wait. Returns {granted 0/1, wait seconds, tokens left}.
_TAKE = _Script(
    _REFILL
    + """
local weight, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4])
local wait = 0
if tokens < weight then wait = (weight - tokens) / rate end
if wait > max_wait then
  return {0, string.format('%.17g', wait), string.format('%.17g', tokens)}
end
tokens = tokens - weight
"""
    + _STORE
    + """
return {1, string.format('%.17g', wait), string.format('%.17g', tokens)}
"""
)

# ARGV[3]: delta, taken (> 0) or given back (< 0); a refund never fills past the capacity,
# a charge may leave a debt. Returns the tokens left.
_ADJUST = _Script(
    _REFILL
    + """
tokens = math.min(capacity, tokens - tonumber(ARGV[3]))
"""
    + _STORE
    + """
return string.format('%.17g', tokens)
"""
)


class RedisTokenBucket(RateLimiter):
    """A `RateLimiter` whose bucket is the Redis hash at `key`, shared by every process.

    Args:
        connection: the Redis connection; the script runs on its multiplexed link, so the
            limiter opens no connection of its own.
        key: the bucket's key; every sidecar limiting the same thing must use the same one.
        options: rate, burst and queue, exactly as for a local `TokenBucket`.
        clock: for sleeping out reservations and timing the fallback.
        fallback_cooldown: seconds to use the local fallback after a Redis error.
        name: the limited service, for logs.

    Usage:

        limiter = RedisTokenBucket(connection, "app:ratelimit:openai", options)
        pipeline = Pipeline("openai", pipeline_options, classify=..., rate_limiter=limiter)
    """

    def __init__(
        self,
        connection: RedisConnection,
        key: str,
        options: TokenBucketOptions,
        *,
        clock: Clock = SYSTEM_CLOCK,
        fallback_cooldown: float = 1.0,
        name: str = "",
    ) -> None:
        self._call = connection.mux.call
        self._key = key
        self._rate = float(options.requests_per_second)
        self._capacity = float(options.burst_size)
        self._max_queue = options.max_queue
        # The wait that `max_queue` unit calls would need to drain: the cap on shared debt.
        self._max_wait = options.max_queue / self._rate
        self._clock = clock
        self._fallback = TokenBucket(options, clock)
        self._cooldown = fallback_cooldown
        self._degraded_until = -math.inf
        self._degraded = False
        self._available = self._capacity
        self._waiting = 0
        self._name = name
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def key(self) -> str:
        """The Redis key of the shared bucket."""
        return self._key

    async def acquire(self, weight: float = 1, deadline: Deadline | None = None) -> None:
        """Take `weight` tokens from the shared bucket, waiting for them if allowed.

        Raises:
            RateLimitedError: At once when the wait would pass `deadline`, or this sidecar
                already has `max_queue` callers waiting; `retry_after` is the wait needed.
            ValueError: If `weight` is negative or larger than the burst size.
        """
        if not 0 <= weight <= self._capacity:
            raise ValueError(f"weight must be between 0 and burst_size ({self._capacity:g})")
        if self._clock.monotonic() < self._degraded_until:
            await self._fallback.acquire(weight, deadline)
            return
        max_wait = self._max_wait if self._waiting < self._max_queue else 0.0
        remaining = deadline.remaining() if deadline is not None else None
        if remaining is not None:
            max_wait = max(0.0, min(max_wait, remaining))
        # A slow Redis must not hold the caller either; but a caller that may not wait
        # (no time left: an alias asking whether to move on) still gets Redis's answer.
        round_trip = None if remaining is None else max(remaining, ROUND_TRIP)
        scope = asyncio.timeout(round_trip)
        try:
            async with scope:
                granted, wait, tokens = await self._take(weight, max_wait)
        except (RedisError, OSError) as exc:  # OSError includes TimeoutError
            # Redis failed or was slower than ROUND_TRIP, not merely this caller's deadline.
            if not scope.expired() or round_trip == ROUND_TRIP:
                self._degrade(exc)
            await self._fallback.acquire(weight, deadline)
            return
        if self._degraded:
            self._degraded = False
            _log.info(
                "global rate limit reachable on Redis again", extra={"integration": self._name}
            )
        self._available = float(tokens)
        seconds = float(wait)
        if not int(granted):
            raise RateLimitedError(retry_after=seconds)
        if seconds > 0:
            self._waiting += 1
            try:
                await self._clock.sleep(seconds)
            finally:
                self._waiting -= 1

    def snapshot(self) -> RateLimiterSnapshot:
        """The shared bucket as last seen by this sidecar (the fallback's while degraded)."""
        if self._clock.monotonic() < self._degraded_until:
            return self._fallback.snapshot()
        return RateLimiterSnapshot(
            available=max(self._available, 0.0),
            capacity=self._capacity,
            rate=self._rate,
            queued=self._waiting,
        )

    def adjust(self, delta: float) -> None:
        """Settle a grant with the real usage: take `delta` more, or give back if < 0.

        Sent in the background (the pipeline settles synchronously); `settled()` waits for
        it. A refund never fills the bucket past its capacity; a charge may leave a debt.
        """
        if not delta:
            return
        if self._clock.monotonic() < self._degraded_until:
            self._fallback.adjust(delta)
            return
        task = asyncio.get_running_loop().create_task(self._adjust(delta))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def settled(self) -> None:
        """Wait until every `adjust` sent so far has reached Redis (or the fallback)."""
        while self._pending:
            await asyncio.gather(*self._pending)

    async def _adjust(self, delta: float) -> None:
        try:
            tokens = await self._run(_ADJUST, delta)
        except (RedisError, OSError) as exc:
            self._degrade(exc)
            self._fallback.adjust(delta)
            return
        self._available = float(tokens)

    async def _take(self, weight: float, max_wait: float) -> Any:
        return await self._run(_TAKE, weight, max_wait)

    async def _run(self, script: _Script, *args: float) -> Any:
        """Run `script` on the bucket by its digest; load it once when Redis lacks it."""
        keyed = (self._key, self._rate, self._capacity, *args)
        try:
            return await self._call("EVALSHA", script.sha, 1, *keyed)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self._call("EVAL", script.lua, 1, *keyed)

    def _degrade(self, exc: BaseException) -> None:
        if not self._degraded:
            self._degraded = True
            _log.warning(
                "global rate limit unreachable on Redis; limiting locally until it is back",
                extra={"integration": self._name, "error": repr(exc)},
            )
        self._degraded_until = self._clock.monotonic() + self._cooldown
