"""Hedged first chunk: an alias with `hedge` starts its next deployment when the first chunk
is late; the first to send a chunk answers, the other request is closed and settled.

The hedge timer runs on a FakeClock where a test needs to place it exactly; the fakes'
delays are real (they are servers). Many calls on the system clock with a long-tailed
primary, timed: test_ai_hedge_acceptance.py.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import (
    AISidecar,
    ai_sidecar,
    config,
    metric_points,
    model,
    read_stream,
    sleepers,
    text_of,
    token_usage,
    user,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from generated.integration.v1 import ai_pb2
from sidecar.ai.hedge import MIN_SAMPLES, FirstChunkTimes, HedgePolicy
from sidecar.config import parse_config
from sidecar.testing import FakeClock

PRIMARY_TEXT = "Hello from the fake model."
BACKUP_TEXT = "Backup answer."


def _alias(hedge: str, retry: str = "{max_retries: 0}") -> str:
    return f"""\
  chat:
    type: ai_alias
    retry_policy: {retry}
    deployments: [primary, backup]
    hedge: {hedge}
"""


TWO_MODELS = model("primary", "http://127.0.0.1:9") + model("backup", "http://127.0.0.1:9")


def _services(fake: FakeLLM, backup: FakeLLM) -> str:
    return model("primary", fake.url) + model("backup", backup.url)


def _call(ai: AISidecar) -> asyncio.Future[tuple[list[ai_pb2.StreamCompleteResponse], object]]:
    request = ai_pb2.StreamCompleteRequest(target="chat", messages=user("hi"))
    return asyncio.ensure_future(read_stream(ai.stub.StreamComplete(request, timeout=20)))


def _outcomes(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    points = metric_points(reader)["integration_ai_requests_total"]
    return {(p.attributes["deployment"], p.attributes["outcome"]): p.value for p in points}


async def test_a_late_first_chunk_starts_the_next_deployment_which_wins(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.then(Step(hang=True))  # answers 200, then never a chunk
    clock, reader = FakeClock(), InMemoryMetricReader()
    yaml_text = config(_services(fake, backup), _alias("{after: 800ms}"))
    async with ai_sidecar(yaml_text, clock=clock, metric_readers=[reader]) as ai:
        call = _call(ai)
        await asyncio.wait_for(fake.requests_seen(1), 5)
        await sleepers(clock)
        await clock.advance(0.79)
        hedged_too_soon = len(backup.completions)
        await clock.advance(0.01)
        messages, error = await asyncio.wait_for(call, 5)
        (loser,) = fake.completions
        await asyncio.wait_for(loser.closed.wait(), 5)
        primary_usage = await token_usage(reader, "primary/fake-model")
        outcomes = _outcomes(reader)
    assert hedged_too_soon == 0
    assert error is None and text_of(messages) == BACKUP_TEXT
    assert [m.end.deployment for m in messages if m.HasField("end")] == ["backup/fake-model"]
    assert loser.client_closed is not None and fake.open_requests == 0
    assert primary_usage == {"input": 8, "output": 0}  # accepted: its prompt is spent
    assert outcomes[("primary/fake-model", "HEDGE_LOST")] == 1
    assert outcomes[("backup/fake-model", "OK")] == 1


async def test_the_first_deployment_still_wins_if_its_chunk_comes_first(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.then(Step(first_delay=0.3))  # late, but earlier than the backup
    backup.then(Step(hang=True))
    clock, reader = FakeClock(), InMemoryMetricReader()
    yaml_text = config(_services(fake, backup), _alias("{after: 100ms}"))
    async with ai_sidecar(yaml_text, clock=clock, metric_readers=[reader]) as ai:
        call = _call(ai)
        await asyncio.wait_for(fake.requests_seen(1), 5)
        await sleepers(clock)
        await clock.advance(0.1)
        await asyncio.wait_for(backup.requests_seen(1), 5)
        messages, error = await asyncio.wait_for(call, 5)
        (loser,) = backup.completions
        await asyncio.wait_for(loser.closed.wait(), 5)
        backup_usage = await token_usage(reader, "backup/fake-model")
    assert error is None and text_of(messages) == PRIMARY_TEXT
    assert loser.client_closed is not None and backup.open_requests == 0
    assert backup_usage == {"input": 8, "output": 0}


async def test_a_failing_first_deployment_leaves_the_answer_to_the_hedge(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    # The primary is hedged, then cuts its stream before any text: the hedge answers and
    # the backup is not asked a second time.
    fake.then(Step(first_delay=0.3, cut_after=1))
    backup.then(Step(first_delay=0.6))
    clock = FakeClock()
    yaml_text = config(_services(fake, backup), _alias("{after: 100ms}"))
    async with ai_sidecar(yaml_text, clock=clock) as ai:
        call = _call(ai)
        await asyncio.wait_for(fake.requests_seen(1), 5)
        await sleepers(clock)
        await clock.advance(0.1)
        messages, error = await asyncio.wait_for(call, 5)
    assert error is None and text_of(messages) == BACKUP_TEXT
    assert len(fake.completions) == len(backup.completions) == 1


async def test_a_deadline_during_a_hedge_closes_both_requests(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.then(Step(hang=True))
    backup.then(Step(hang=True))
    clock, reader = FakeClock(), InMemoryMetricReader()
    yaml_text = config(_services(fake, backup), _alias("{after: 100ms}"))
    async with ai_sidecar(yaml_text, clock=clock, metric_readers=[reader]) as ai:
        request = ai_pb2.StreamCompleteRequest(target="chat", messages=user("hi"))
        call = asyncio.ensure_future(read_stream(ai.stub.StreamComplete(request, timeout=1)))
        await asyncio.wait_for(fake.requests_seen(1), 5)
        await sleepers(clock)
        await clock.advance(0.1)
        await asyncio.wait_for(backup.requests_seen(1), 5)
        messages, error = await asyncio.wait_for(call, 5)
        exchanges = [*fake.completions, *backup.completions]
        await asyncio.wait_for(asyncio.gather(*(e.closed.wait() for e in exchanges)), 5)
        usage = [await token_usage(reader, f"{name}/fake-model") for name in ("primary", "backup")]
        outcomes = _outcomes(reader)
    assert messages == [] and error is not None
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert all(e.client_closed is not None for e in exchanges)
    assert usage == [{"input": 8, "output": 0}] * 2
    assert outcomes[("primary/fake-model", "CANCELLED")] == 1
    assert outcomes[("backup/fake-model", "CANCELLED")] == 1


async def test_no_hedge_while_the_retry_budget_is_spent(fake: FakeLLM, backup: FakeLLM) -> None:
    fake.then(Step(first_delay=0.3))
    clock = FakeClock()
    spent = "{max_retries: 1, budget_ratio: 0, budget_min_retries_per_second: 0}"
    yaml_text = config(_services(fake, backup), _alias("{after: 100ms}", retry=spent))
    async with ai_sidecar(yaml_text, clock=clock) as ai:
        call = _call(ai)
        await asyncio.wait_for(fake.requests_seen(1), 5)
        await sleepers(clock)
        await clock.advance(0.1)
        messages, error = await asyncio.wait_for(call, 5)
    assert error is None and text_of(messages) == PRIMARY_TEXT
    assert backup.completions == []


async def test_a_prompt_first_chunk_is_never_hedged(fake: FakeLLM, backup: FakeLLM) -> None:
    yaml_text = config(_services(fake, backup), _alias("{after: 100ms}"))
    async with ai_sidecar(yaml_text, clock=FakeClock()) as ai:
        for _ in range(3):
            messages, error = await _call(ai)
            assert error is None and text_of(messages) == PRIMARY_TEXT
    assert backup.completions == []


def test_a_percentile_hedges_after_that_share_of_recent_first_chunks() -> None:
    policy = HedgePolicy(percentile=95.0, floor=0.2)
    recent = FirstChunkTimes()
    for _ in range(MIN_SAMPLES - 1):
        recent.add(0.5)
    assert policy.delay(recent) is None  # too few to trust
    recent.add(3.0)
    assert policy.delay(recent) == 0.5  # 1 slow call in 20 is the 5% tail: it is hedged
    recent.add(3.0)
    assert policy.delay(recent) == 3.0  # 2 in 21 are more than 5%
    fast = FirstChunkTimes()
    for _ in range(MIN_SAMPLES):
        fast.add(0.01)
    assert policy.delay(fast) == 0.2  # never sooner than the floor
    assert HedgePolicy(after=0.8).delay(fast) == 0.8


@pytest.mark.parametrize(
    ("hedge", "delay", "percentile", "floor"),
    [
        ("{after: 800ms}", 0.8, None, 0.05),
        ("{after: p95, floor: 200ms}", None, 95.0, 0.2),
        ("{after: p99.9}", None, 99.9, 0.05),
    ],
)
def test_hedge_settings_load(
    hedge: str, delay: float | None, percentile: float | None, floor: float
) -> None:
    loaded = parse_config(config(TWO_MODELS, _alias(hedge)))
    settings = loaded.services["chat"].hedge  # type: ignore[union-attr]
    assert (settings.delay, settings.percentile, settings.floor) == (delay, percentile, floor)


@pytest.mark.parametrize("after", ["p100", "p10", "0s", "-1s", "soon"])
def test_bad_hedge_settings_are_refused_naming_the_path(after: str) -> None:
    with pytest.raises(Exception, match="hedge"):
        parse_config(config(TWO_MODELS, _alias(f"{{after: {after}}}")))
