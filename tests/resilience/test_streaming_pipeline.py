"""The streaming pipeline: admit (cooldown -> breaker -> bulkhead -> limiters), first chunk
(no retry afterwards), settle (once; tokens reconciled; the slot always released). Timed
with FakeClock only."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sidecar.resilience import (
    Bulkhead,
    BulkheadFullError,
    BulkheadOptions,
    CircuitBreakerOptions,
    CircuitOpenError,
    CircuitState,
    CoolingDownError,
    Deadline,
    ExecutionRejected,
    OverCapacityError,
    RateLimit,
    RateLimitedError,
    RateLimiter,
    RateLimiterSnapshot,
    ResilienceEvent,
    StreamingOptions,
    StreamingPipeline,
    StreamLease,
    StreamOutcome,
    TokenBucketOptions,
)
from sidecar.testing import FakeClock

BREAKER = CircuitBreakerOptions(failure_threshold=1, reset_timeout=10.0, half_open_max_calls=1)
REQUESTS = RateLimit("requests", TokenBucketOptions(1.0, 2.0, max_queue=10))
TOKENS = RateLimit("tokens", TokenBucketOptions(10.0, 100.0, max_queue=10), weighted=True)


def make(
    clock: FakeClock,
    *,
    breaker: CircuitBreakerOptions | None = BREAKER,
    bulkhead: BulkheadOptions | None = None,
    limits: tuple[RateLimit, ...] = (REQUESTS, TOKENS),
    **kwargs: object,
) -> StreamingPipeline:
    options = StreamingOptions(circuit_breaker=breaker, bulkhead=bulkhead, rate_limits=limits)
    return StreamingPipeline("llm", options, clock=clock, **kwargs)  # type: ignore[arg-type]


def available(pipeline: StreamingPipeline, name: str) -> float:
    return pipeline.snapshot().rate_limiters[name].available


def in_flight(pipeline: StreamingPipeline) -> int:
    snapshot = pipeline.snapshot().bulkhead
    assert snapshot is not None
    return snapshot.in_flight


async def trip(pipeline: StreamingPipeline, weight: float = 1) -> None:
    """One failed call: with failure_threshold=1 the breaker opens."""
    lease = await pipeline.admit(weight=weight)
    lease.settle(StreamOutcome.FAILURE)
    assert pipeline.circuit_breaker is not None
    assert pipeline.circuit_breaker.state is CircuitState.OPEN


# --- admission order -------------------------------------------------------------------


async def test_admission_checks_cooldown_then_breaker_then_bulkhead_then_limiters(
    clock: FakeClock,
) -> None:
    limits = (RateLimit("requests", TokenBucketOptions(0.01, 1.0)),)  # 100 s per token
    target = make(clock, bulkhead=BulkheadOptions(1, 0), limits=limits)
    held = await target.admit()  # the only slot and the only token
    assert target.circuit_breaker is not None
    target.circuit_breaker.isolate()
    target.cool_down(5)
    refusals: list[type[ExecutionRejected]] = []

    async def refusal() -> None:
        with pytest.raises(ExecutionRejected) as caught:
            await target.admit(wait=False)
        refusals.append(type(caught.value))

    await refusal()  # everything refuses: the cooldown answers first
    await clock.advance(5)
    await refusal()  # the breaker next
    target.circuit_breaker.reset()
    await refusal()  # then the bulkhead
    held.settle(StreamOutcome.SUCCESS)  # frees the slot, not the token
    await refusal()  # and last the limiter
    assert refusals == [CoolingDownError, CircuitOpenError, BulkheadFullError, RateLimitedError]


async def test_an_open_breaker_spends_no_token_and_takes_no_slot(clock: FakeClock) -> None:
    target = make(clock, bulkhead=BulkheadOptions(2, 0))
    await trip(target)
    before = (available(target, "requests"), available(target, "tokens"))
    with pytest.raises(CircuitOpenError) as caught:
        await target.admit(weight=50)
    assert caught.value.retry_after == pytest.approx(10)
    assert (available(target, "requests"), available(target, "tokens")) == before
    assert in_flight(target) == 0


async def test_a_weight_no_limiter_can_hold_is_refused_before_the_breaker(
    clock: FakeClock,
) -> None:
    target = make(clock)
    await trip(target)
    await clock.advance(10)  # the next admission may probe
    with pytest.raises(OverCapacityError) as caught:
        await target.admit(weight=101)
    assert (caught.value.limiter, caught.value.weight, caught.value.capacity) == (
        "tokens",
        101,
        100,
    )
    assert caught.value.retry_after is None  # waiting never helps
    probe = await target.admit(weight=1)  # the refusal did not take the probe permit
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.HALF_OPEN
    probe.settle(StreamOutcome.SUCCESS)
    assert target.circuit_breaker.state is CircuitState.CLOSED


async def test_each_limiter_takes_its_own_weight(clock: FakeClock) -> None:
    target = make(clock)
    lease = await target.admit(weight=30)
    assert (available(target, "requests"), available(target, "tokens")) == (1, 70)
    assert lease.weight == 30


async def test_a_later_limiter_refusing_gives_back_what_earlier_ones_took(
    clock: FakeClock,
) -> None:
    target = make(clock, bulkhead=BulkheadOptions(2, 0))
    await target.admit(weight=95)  # leaves 1 request and 5 tokens
    with pytest.raises(RateLimitedError) as caught:
        await target.admit(weight=20, wait=False)  # requests grants, tokens refuses
    assert caught.value.retry_after == pytest.approx(1.5)  # the exact refill time of 15 more
    assert available(target, "requests") == 1
    assert available(target, "tokens") == pytest.approx(5)
    assert in_flight(target) == 1


async def test_wait_true_queues_for_tokens_within_the_deadline(clock: FakeClock) -> None:
    target = make(clock)
    await target.admit(weight=100)
    waiting = asyncio.ensure_future(target.admit(weight=20, deadline=Deadline.after(5, clock)))
    await clock.wait_for_sleepers()
    assert not waiting.done()
    await clock.advance(2)
    lease = await asyncio.wait_for(waiting, 1)
    assert lease.weight == 20
    with pytest.raises(RateLimitedError):  # would need 10 s; only 1 s is left
        await target.admit(weight=100, deadline=Deadline.after(1, clock))


async def test_wait_false_refuses_a_full_bulkhead_at_once(clock: FakeClock) -> None:
    target = make(clock, bulkhead=BulkheadOptions(1, 5), limits=())
    await target.admit()
    with pytest.raises(BulkheadFullError):
        await target.admit(wait=False)
    assert clock.sleepers == 0
    assert target.snapshot().bulkhead == target.bulkhead.snapshot()  # type: ignore[union-attr]


# --- first chunk -----------------------------------------------------------------------


async def test_first_chunk_commits_the_call_once(clock: FakeClock) -> None:
    target = make(clock)
    lease = await target.admit()
    assert not lease.committed
    await clock.advance(0.5)
    lease.first_chunk()
    await clock.advance(0.5)
    lease.first_chunk()  # a later chunk changes nothing
    assert lease.committed
    assert lease.first_chunk_at == pytest.approx(lease.started + 0.5)


async def test_a_retry_loop_retries_only_before_the_first_chunk(clock: FakeClock) -> None:
    """The loop an owner writes: a failure before the first chunk is retried, one after it
    ends the call, because the caller already has part of the answer."""
    target = make(clock, breaker=None, limits=())

    async def call(fail_after_chunks: int) -> tuple[list[str], int]:
        sent: list[str] = []
        attempts = 0
        while True:
            attempts += 1
            lease = await target.admit()
            with lease:
                try:
                    for index, chunk in enumerate(["a", "b", "c"]):
                        if attempts == 1 and index == fail_after_chunks:
                            raise ConnectionError("cut")
                        lease.first_chunk()
                        sent.append(chunk)
                except ConnectionError:
                    lease.settle(StreamOutcome.FAILURE)
                    if lease.committed:
                        return sent, attempts
                    continue
                lease.settle(StreamOutcome.SUCCESS)
                return sent, attempts

    assert await call(fail_after_chunks=0) == (["a", "b", "c"], 2)
    assert await call(fail_after_chunks=2) == (["a", "b"], 1)


# --- settle ----------------------------------------------------------------------------


async def test_settle_refunds_an_overestimate(clock: FakeClock) -> None:
    target = make(clock)
    lease = await target.admit(weight=60)
    assert lease.settle(StreamOutcome.SUCCESS, actual_weight=20)
    assert available(target, "tokens") == pytest.approx(80)
    assert available(target, "requests") == 1  # one per call: never reconciled


async def test_settle_charges_an_underestimate_as_a_debt_paid_before_the_next_grant(
    clock: FakeClock,
) -> None:
    target = make(clock)
    lease = await target.admit(weight=80)
    lease.settle(StreamOutcome.SUCCESS, actual_weight=110)  # 100 - 110: 10 in debt
    assert available(target, "tokens") == 0
    await clock.advance(1)
    assert available(target, "tokens") == 0  # the refill paid the debt first
    await clock.advance(1)
    assert available(target, "tokens") == pytest.approx(10)


async def test_settle_without_actual_weight_keeps_the_reservation(clock: FakeClock) -> None:
    target = make(clock)
    lease = await target.admit(weight=60)
    lease.settle(StreamOutcome.FAILURE)
    assert available(target, "tokens") == pytest.approx(40)


async def test_an_ignored_outcome_is_not_counted_by_the_breaker(clock: FakeClock) -> None:
    target = make(clock)
    for _ in range(5):
        (await target.admit()).settle(StreamOutcome.IGNORED)
        await clock.advance(1)  # refill the request bucket
    breaker = target.snapshot().circuit_breaker
    assert breaker is not None
    assert (breaker.state, breaker.consecutive_failures, breaker.total_in_window) == (
        CircuitState.CLOSED,
        0,
        0,
    )
    (await target.admit()).settle(StreamOutcome.FAILURE)
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.OPEN


async def test_an_ignored_probe_frees_the_half_open_permit(clock: FakeClock) -> None:
    target = make(clock)
    await trip(target)
    await clock.advance(10)
    probe = await target.admit()
    with pytest.raises(CircuitOpenError):
        await target.admit()  # the only probe permit is taken
    probe.settle(StreamOutcome.IGNORED)
    second = await target.admit()  # ... and given back by the ignored outcome
    second.settle(StreamOutcome.SUCCESS)
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.CLOSED


async def test_a_second_settle_changes_nothing_and_is_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    target = make(clock, bulkhead=BulkheadOptions(2, 0))
    lease = await target.admit(weight=50)
    other = await target.admit(weight=10)
    assert lease.settle(StreamOutcome.SUCCESS, actual_weight=10)
    with caplog.at_level(logging.WARNING, logger="sidecar.resilience.streaming"):
        assert not lease.settle(StreamOutcome.FAILURE, actual_weight=90)
    assert "settled twice" in caplog.text
    assert in_flight(target) == 1  # the other lease's slot, released only once for this one
    assert available(target, "tokens") == pytest.approx(80)
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.CLOSED  # the failure was not counted
    other.settle(StreamOutcome.SUCCESS)
    assert in_flight(target) == 0


async def test_settle_rejects_a_negative_actual_weight(clock: FakeClock) -> None:
    lease = await make(clock).admit(weight=5)
    with pytest.raises(ValueError):
        lease.settle(StreamOutcome.SUCCESS, actual_weight=-1)
    assert not lease.settled
    assert lease.settle(StreamOutcome.SUCCESS, actual_weight=5)


# --- the bulkhead slot on every path ----------------------------------------------------


@pytest.mark.parametrize(
    "outcome", [StreamOutcome.SUCCESS, StreamOutcome.FAILURE, StreamOutcome.IGNORED]
)
async def test_every_outcome_releases_the_slot(clock: FakeClock, outcome: StreamOutcome) -> None:
    target = make(clock, bulkhead=BulkheadOptions(1, 0))
    lease = await target.admit()
    assert lease.holds_slot and in_flight(target) == 1
    lease.settle(outcome)
    assert not lease.holds_slot and in_flight(target) == 0


async def test_leaving_the_with_block_unsettled_settles_ignored(clock: FakeClock) -> None:
    target = make(clock, bulkhead=BulkheadOptions(1, 0))
    await trip(target)
    await clock.advance(10)
    lease = await target.admit()  # the half-open probe
    with pytest.raises(KeyError), lease:
        raise KeyError("a bug in the owner")
    assert lease.settled and in_flight(target) == 0
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.HALF_OPEN  # not counted either way
    (await target.admit()).settle(StreamOutcome.SUCCESS)  # the probe permit came back


async def test_cancelling_a_streaming_call_releases_its_slot_and_probe(clock: FakeClock) -> None:
    target = make(clock, bulkhead=BulkheadOptions(1, 0))
    await trip(target)
    await clock.advance(10)
    leases: list[StreamLease] = []

    async def stream() -> None:
        with await target.admit() as lease:
            leases.append(lease)
            lease.first_chunk()
            await clock.sleep(60)  # the upstream is slow; the caller gives up
            lease.settle(StreamOutcome.SUCCESS)

    task = asyncio.ensure_future(stream())
    await clock.wait_for_sleepers()
    assert in_flight(target) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leases[0].settled and in_flight(target) == 0
    (await target.admit()).settle(StreamOutcome.SUCCESS)  # slot and probe permit are free
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.CLOSED


async def test_cancelling_while_queued_for_tokens_keeps_nothing(clock: FakeClock) -> None:
    target = make(clock, breaker=None, bulkhead=BulkheadOptions(2, 0))
    await target.admit(weight=100)  # every token
    queued = asyncio.ensure_future(target.admit(weight=50))  # a slot, a request, then waits
    await clock.wait_for_sleepers()
    assert in_flight(target) == 2
    assert available(target, "requests") == 0
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert in_flight(target) == 1  # the queued call's slot is back
    assert available(target, "requests") == pytest.approx(1)  # and its request token
    assert target.snapshot().rate_limiters["tokens"].queued == 0


async def test_cancelling_while_queued_frees_the_half_open_probe(clock: FakeClock) -> None:
    slow = RateLimit("tokens", TokenBucketOptions(1.0, 100.0), weighted=True)
    target = make(clock, limits=(slow,))
    await trip(target, weight=100)  # opens the breaker and empties the bucket
    await clock.advance(10)  # the breaker may probe; 10 tokens are back
    probe = asyncio.ensure_future(target.admit(weight=50))  # the probe, waiting for 40 more
    await clock.wait_for_sleepers()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.HALF_OPEN
    second = await target.admit(weight=5, wait=False)  # the permit and tokens were kept free
    second.settle(StreamOutcome.SUCCESS)
    assert target.circuit_breaker.state is CircuitState.CLOSED


async def test_waiting_for_a_slot_is_bounded_by_the_deadline(clock: FakeClock) -> None:
    target = make(clock, bulkhead=BulkheadOptions(1, 1), limits=())
    held = await target.admit()
    waiting = asyncio.ensure_future(target.admit(deadline=Deadline.after(2, clock)))
    await clock.wait_for_sleepers()
    await clock.advance(2)
    with pytest.raises(BulkheadFullError):
        await waiting
    held.settle(StreamOutcome.SUCCESS)
    assert in_flight(target) == 0


# --- cooldown, snapshots, shared bulkhead, given limiters -------------------------------


async def test_cooldown_refuses_until_it_ends_and_never_shortens(clock: FakeClock) -> None:
    target = make(clock)
    target.cool_down(30)
    target.cool_down(5)  # a shorter pause does not cut the longer one
    with pytest.raises(CoolingDownError) as caught:
        await target.admit()
    assert caught.value.retry_after == pytest.approx(30)
    assert target.snapshot().cooldown == pytest.approx(30)
    await clock.advance(30)
    assert target.snapshot().cooldown is None
    (await target.admit()).settle(StreamOutcome.SUCCESS)
    with pytest.raises(ValueError):
        target.cool_down(-1)


async def test_deployments_can_share_one_bulkhead(clock: FakeClock) -> None:
    shared = Bulkhead(BulkheadOptions(1, 0), clock)
    first = StreamingPipeline("llm", StreamingOptions(), clock=clock, bulkhead=shared)
    second = StreamingPipeline("other", StreamingOptions(), clock=clock, bulkhead=shared)
    lease = await first.admit()
    with pytest.raises(BulkheadFullError):
        await second.admit(wait=False)
    lease.settle(StreamOutcome.SUCCESS)
    (await second.admit(wait=False)).settle(StreamOutcome.SUCCESS)
    assert second.bulkhead is shared


async def test_snapshot_reports_every_policy_and_a_unary_view(clock: FakeClock) -> None:
    target = make(clock, bulkhead=BulkheadOptions(3, 0))
    await target.admit(weight=40)
    snapshot = target.snapshot()
    assert snapshot.name == "llm"
    assert list(snapshot.rate_limiters) == ["requests", "tokens"]
    assert snapshot.rate_limiters["tokens"].available == pytest.approx(60)
    assert snapshot.bulkhead is not None and snapshot.bulkhead.in_flight == 1
    assert snapshot.circuit_breaker is not None
    unary = snapshot.as_pipeline_snapshot("tokens")
    assert (unary.name, unary.rate_limiter, unary.bulkhead) == (
        "llm",
        snapshot.rate_limiters["tokens"],
        snapshot.bulkhead,
    )
    assert snapshot.as_pipeline_snapshot().rate_limiter == snapshot.rate_limiters["requests"]
    empty = StreamingPipeline("plain", StreamingOptions(), clock=clock).snapshot()
    assert (empty.circuit_breaker, dict(empty.rate_limiters), empty.bulkhead) == (None, {}, None)


class RecordingLimiter(RateLimiter):
    """A remote-style limiter: every acquire is a coroutine; no `adjust`."""

    def __init__(self) -> None:
        self.acquired: list[tuple[float, float | None]] = []

    async def acquire(self, weight: float = 1, deadline: Deadline | None = None) -> None:
        self.acquired.append((weight, None if deadline is None else deadline.remaining()))
        if deadline is not None and deadline.remaining() == 0:
            raise RateLimitedError(retry_after=3.0)

    def snapshot(self) -> RateLimiterSnapshot:
        return RateLimiterSnapshot(available=7, capacity=100, rate=5, queued=0)


async def test_a_given_limiter_replaces_the_local_bucket(clock: FakeClock) -> None:
    remote = RecordingLimiter()
    target = make(clock, breaker=None, limits=(TOKENS,), rate_limiters={"tokens": remote})
    lease = await target.admit(weight=40, deadline=Deadline.after(9, clock))
    lease.settle(StreamOutcome.SUCCESS, actual_weight=5)  # cannot be reconciled: no adjust
    with pytest.raises(RateLimitedError) as caught:
        await target.admit(weight=40, wait=False)  # not waiting: a deadline with no time left
    assert remote.acquired == [(40, 9), (40, 0)]
    assert caught.value.retry_after == 3.0
    assert target.rate_limiters == {"tokens": remote}
    assert target.snapshot().rate_limiters["tokens"] == remote.snapshot()


def test_options_are_checked(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="unique"):
        StreamingOptions(rate_limits=(REQUESTS, REQUESTS))
    with pytest.raises(ValueError, match="no configured rate limit"):
        make(clock, limits=(REQUESTS,), rate_limiters={"tokens": RecordingLimiter()})


async def test_a_negative_weight_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        await make(clock).admit(weight=-1)


# --- events ------------------------------------------------------------------------------


async def test_lifecycle_events_carry_timing_weight_and_detail(clock: FakeClock) -> None:
    target = make(clock)
    everything: list[ResilienceEvent] = []
    policy_only: list[ResilienceEvent] = []
    target.add_listener(everything.append, lifecycle=True)
    target.add_listener(policy_only.append)
    lease = await target.admit(weight=50, detail="chat")
    await clock.advance(0.25)
    lease.first_chunk()
    await clock.advance(1.75)
    lease.settle(StreamOutcome.SUCCESS, actual_weight=12, detail="chat, 12 tokens")
    assert [(e.strategy, e.event) for e in everything] == [
        ("stream", "admitted"),
        ("stream", "first_chunk"),
        ("stream", "settled"),
    ]
    admitted, first, settled = everything
    assert (admitted.weight, admitted.detail, admitted.pipeline) == (50, "chat", "llm")
    assert first.elapsed == pytest.approx(0.25)
    assert (settled.outcome, settled.weight, settled.detail) == ("success", 12, "chat, 12 tokens")
    assert settled.elapsed == pytest.approx(2.0)
    assert settled.first_chunk == pytest.approx(0.25)
    assert policy_only == []


async def test_rejections_transitions_and_cooldowns_are_published(clock: FakeClock) -> None:
    target = make(clock)
    events: list[ResilienceEvent] = []
    target.add_listener(events.append)
    await trip(target)
    with pytest.raises(CircuitOpenError):
        await target.admit(detail="embeddings")
    target.cool_down(3)
    with pytest.raises(CoolingDownError):
        await target.admit(detail="chat")
    assert [(e.strategy, e.event, e.outcome, e.detail) for e in events] == [
        ("circuit_breaker", "opened", None, None),
        ("circuit_breaker", "circuit_open", "CIRCUIT_OPEN", "embeddings"),
        ("cooldown", "cooldown", None, None),
        ("cooldown", "cooling_down", "COOLING_DOWN", "chat"),
    ]
    assert events[0].delay == pytest.approx(10)
    assert events[1].delay == pytest.approx(10)
    assert events[3].delay == pytest.approx(3)


async def test_rejection_error_names_the_error_raised_and_the_event_outcome(
    clock: FakeClock,
) -> None:
    class Refused(Exception):
        def __init__(self, reason: str) -> None:
            super().__init__(reason)
            self.reason = reason

    target = make(clock, rejection_error=lambda exc: Refused(f"MY_{exc.reason}"))
    events: list[ResilienceEvent] = []
    target.add_listener(events.append)
    with pytest.raises(Refused) as caught:
        await target.admit(weight=500)
    assert caught.value.reason == "MY_OVER_CAPACITY"
    assert isinstance(caught.value.__cause__, OverCapacityError)
    assert [(e.event, e.outcome, e.weight) for e in events] == [
        ("over_capacity", "MY_OVER_CAPACITY", 500)
    ]


async def test_a_broken_listener_never_breaks_the_call(clock: FakeClock) -> None:
    target = make(clock)

    def broken(event: ResilienceEvent) -> None:
        raise RuntimeError("metrics are down")

    target.add_listener(broken, lifecycle=True)
    lease = await target.admit()
    lease.first_chunk()
    assert lease.settle(StreamOutcome.SUCCESS)
