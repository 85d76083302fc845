"""`RedisTokenBucket`: one bucket on Redis shared by every process, reservations instead of
polling, and a local fallback when Redis is unreachable. Real Redis, real (short) time."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis_server import free_port
from support import RedisConnect

from sidecar.backends.ratelimit.redis import RedisTokenBucket
from sidecar.config import CacheServiceConfig
from sidecar.connections.redis import RedisConnection
from sidecar.resilience import SYSTEM_CLOCK, Deadline, RateLimitedError, TokenBucketOptions


@pytest.fixture
def clients(
    cache_settings: CacheServiceConfig, redis_connect: RedisConnect
) -> list[RedisConnection]:
    """Two independent connections: two sidecars sharing one Redis."""
    return [redis_connect(cache_settings, "first"), redis_connect(cache_settings, "second")]


def bucket(
    client: RedisConnection, key: str, rate: float, burst: float, queue: int = 1000
) -> RedisTokenBucket:
    options = TokenBucketOptions(requests_per_second=rate, burst_size=burst, max_queue=queue)
    return RedisTokenBucket(client, key, options, name="upstream")


def soon(seconds: float) -> Deadline:
    return Deadline.after(seconds, SYSTEM_CLOCK)


async def test_burst_is_granted_at_once_then_a_call_that_may_not_wait_is_refused(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    limiter = bucket(clients[0], key_prefix + "b", rate=2, burst=3, queue=0)
    for _ in range(3):
        await limiter.acquire()
    with pytest.raises(RateLimitedError) as raised:
        await limiter.acquire()
    assert raised.value.retry_after == pytest.approx(0.5, abs=0.05)


async def test_a_call_whose_deadline_ends_before_its_token_is_refused_at_once(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    limiter = bucket(clients[0], key_prefix + "b", rate=1, burst=1)
    await limiter.acquire()
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as raised:
        await limiter.acquire(deadline=soon(0.5))
    assert time.monotonic() - started < 0.4  # no waiting for a token it cannot get in time
    assert raised.value.retry_after == pytest.approx(1.0, abs=0.1)


async def test_two_processes_on_one_key_share_one_burst(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    first = bucket(clients[0], key_prefix + "b", rate=0.1, burst=5, queue=0)
    second = bucket(clients[1], key_prefix + "b", rate=0.1, burst=5, queue=0)
    for _ in range(3):
        await first.acquire()
    granted = 0
    for _ in range(5):
        try:
            await second.acquire()
            granted += 1
        except RateLimitedError:
            pass
    assert granted == 2


async def test_a_caller_with_time_to_wait_reserves_the_next_token_and_waits_for_it(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    limiter = bucket(clients[0], key_prefix + "b", rate=10, burst=1)
    await limiter.acquire()
    started = time.monotonic()
    await limiter.acquire(deadline=soon(1.0))
    assert 0.07 <= time.monotonic() - started <= 0.5


async def test_waiters_are_served_in_reservation_order_across_processes(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    first = bucket(clients[0], key_prefix + "b", rate=20, burst=1)
    second = bucket(clients[1], key_prefix + "b", rate=20, burst=1)
    await clients[1].ping()  # both connected, so each call reaches Redis at once
    await first.acquire()
    done: list[str] = []

    async def take(limiter: RedisTokenBucket, name: str) -> None:
        await limiter.acquire(deadline=soon(2.0))
        done.append(name)

    tasks = []
    for limiter, name in ((second, "a"), (first, "b"), (second, "c")):
        tasks.append(asyncio.create_task(take(limiter, name)))
        await asyncio.sleep(0.02)  # each reaches Redis before the next one starts
    await asyncio.gather(*tasks)
    assert done == ["a", "b", "c"]


async def test_a_caller_with_no_time_to_wait_still_gets_the_shared_buckets_answer(
    clients: list[RedisConnection], key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = bucket(clients[0], key_prefix + "b", rate=0.01, burst=2)
    second = bucket(clients[1], key_prefix + "b", rate=0.01, burst=2)
    with caplog.at_level(logging.WARNING, logger="sidecar.backends.redis"):
        await first.acquire(deadline=soon(0.000_001))  # no time even to connect
        await second.acquire(deadline=soon(0))
        with pytest.raises(RateLimitedError):  # the shared bucket is empty, not a local one
            await first.acquire(deadline=soon(0))
    assert caplog.records == []  # Redis is fine: nothing degraded
    assert first.snapshot().available == pytest.approx(0, abs=0.01)


async def test_a_refused_caller_takes_nothing_from_the_bucket(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    impatient = bucket(clients[0], key_prefix + "b", rate=10, burst=1, queue=0)
    patient = bucket(clients[0], key_prefix + "b", rate=10, burst=1)
    await impatient.acquire()
    for _ in range(5):
        with pytest.raises(RateLimitedError):
            await impatient.acquire()
    started = time.monotonic()
    await patient.acquire(deadline=soon(1.0))
    assert time.monotonic() - started <= 0.15  # no refused call left a debt behind


async def test_max_queue_zero_never_waits(clients: list[RedisConnection], key_prefix: str) -> None:
    limiter = bucket(clients[0], key_prefix + "b", rate=100, burst=1, queue=0)
    await limiter.acquire()
    with pytest.raises(RateLimitedError):
        await limiter.acquire()


async def test_weight_beyond_the_burst_is_rejected(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    with pytest.raises(ValueError, match="burst_size"):
        await bucket(clients[0], key_prefix + "b", rate=1, burst=2).acquire(3)


async def test_snapshot_reports_the_tokens_redis_last_answered(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    limiter = bucket(clients[0], key_prefix + "b", rate=0.01, burst=10)
    await limiter.acquire(4)
    snapshot = limiter.snapshot()
    assert (round(snapshot.available), snapshot.capacity, snapshot.rate) == (6, 10, 0.01)


async def test_bucket_key_expires_once_it_would_be_full_again(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    await bucket(clients[0], key_prefix + "b", rate=10, burst=20).acquire(5)
    assert 0 < await clients[0].client.pttl(key_prefix + "b") <= 500 + 1000


async def test_unreachable_redis_falls_back_to_a_local_bucket_and_says_so(
    caplog: pytest.LogCaptureFixture, redis_connect: RedisConnect
) -> None:
    settings = CacheServiceConfig(backend="redis", host="127.0.0.1", port=free_port())
    client = redis_connect(settings)
    limiter = bucket(client, "b", rate=0.01, burst=2)
    with caplog.at_level(logging.WARNING, logger="sidecar.backends.redis"):
        await limiter.acquire(deadline=soon(1.0))  # granted locally: calls keep flowing
        await limiter.acquire(deadline=soon(1.0))
        with pytest.raises(RateLimitedError):  # ... but the limit still holds, per process
            await limiter.acquire(deadline=soon(0.01))
    assert [r.message for r in caplog.records].count(
        "global rate limit unreachable on Redis; limiting locally until it is back"
    ) == 1
    assert limiter.snapshot().available == pytest.approx(0, abs=0.01)


async def _tokens(client: RedisConnection, key: str) -> float:
    """The balance stored in the bucket's hash (before any refill since its last change)."""
    return float(await client.client.hget(key, "tokens"))


async def test_a_refund_is_seen_by_every_process_at_once(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    first = bucket(clients[0], key_prefix + "b", rate=0.001, burst=100, queue=0)
    second = bucket(clients[1], key_prefix + "b", rate=0.001, burst=100, queue=0)
    await first.acquire(80)  # the estimate
    first.adjust(-50)  # the call cost 30
    await first.settled()
    assert await _tokens(clients[0], key_prefix + "b") == pytest.approx(70, abs=0.01)
    assert first.snapshot().available == pytest.approx(70, abs=0.01)
    await second.acquire(70)  # the refund is spendable from the other process
    with pytest.raises(RateLimitedError):
        await second.acquire(1)


async def test_an_overrun_is_charged_as_a_debt_that_later_callers_wait_out(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    limiter = bucket(clients[0], key_prefix + "b", rate=10, burst=10)
    await limiter.acquire(10)
    limiter.adjust(5)  # the call cost 15
    await limiter.settled()
    assert await _tokens(clients[0], key_prefix + "b") == pytest.approx(-5, abs=0.1)
    with pytest.raises(RateLimitedError) as raised:
        await limiter.acquire(1, deadline=soon(0.2))
    assert raised.value.retry_after == pytest.approx(0.6, abs=0.05)  # 6 tokens at 10/s


async def test_a_refund_never_fills_the_bucket_past_its_capacity(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    limiter = bucket(clients[0], key_prefix + "b", rate=0.001, burst=10)
    await limiter.acquire(2)
    limiter.adjust(-100)
    await limiter.settled()
    assert await _tokens(clients[0], key_prefix + "b") == pytest.approx(10)


async def test_concurrent_reservations_and_settlements_from_two_processes_add_up_exactly(
    clients: list[RedisConnection], key_prefix: str
) -> None:
    limiters = [bucket(client, key_prefix + "b", rate=0.001, burst=1000) for client in clients]

    async def call(limiter: RedisTokenBucket, cost: int) -> None:
        await limiter.acquire(10)
        await asyncio.sleep(0)
        limiter.adjust(cost - 10)

    await asyncio.gather(
        *(call(limiters[i % 2], cost=i % 7) for i in range(60))  # each costs 0 to 6
    )
    await asyncio.gather(*(limiter.settled() for limiter in limiters))
    spent = sum(i % 7 for i in range(60))
    assert await _tokens(clients[0], key_prefix + "b") == pytest.approx(1000 - spent, abs=0.5)


async def test_a_settlement_while_redis_is_unreachable_goes_to_the_local_fallback(
    redis_connect: RedisConnect,
) -> None:
    settings = CacheServiceConfig(backend="redis", host="127.0.0.1", port=free_port())
    limiter = bucket(redis_connect(settings), "b", rate=0.001, burst=10)
    await limiter.acquire(8, deadline=soon(1.0))  # granted by the fallback
    limiter.adjust(-6)
    await limiter.settled()
    assert limiter.snapshot().available == pytest.approx(8, abs=0.01)
