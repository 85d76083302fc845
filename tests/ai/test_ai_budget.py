"""Per-deployment request and token budgets, timed with FakeClock.

A call reserves its prompt estimate plus max_tokens before it starts. A prompt of "hi" is
estimated at 8 tokens, so with `max_tokens: 200` each call reserves 208; a budget of 600
tokens per minute (10 per second, 600 at once) admits two such calls at a time.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import AISidecar, ai_sidecar, config, model, sleepers, user
from support import error_info, retry_delay

from generated.integration.v1 import ai_pb2
from sidecar.ai import Deployment
from sidecar.testing import FakeClock

RESERVED = 208


def _deployment(ai: AISidecar, target: str = "openai") -> Deployment:
    servicer = ai.running.servicers["integration.v1.AIService"]
    return servicer.router.route(target).deployments[0]


def _call(ai: AISidecar, timeout: float) -> asyncio.Future[ai_pb2.CompleteResponse]:
    request = ai_pb2.CompleteRequest(target="openai", messages=user("hi"), max_tokens=200)
    return asyncio.ensure_future(ai.stub.Complete(request, timeout=timeout))


async def test_calls_beyond_the_token_budget_wait_or_fail_by_their_deadlines(
    fake: FakeLLM,
) -> None:
    fake.default = Step(delay=0.05)
    clock = FakeClock()
    service = model("openai", fake.url, extra="rate_limit: {tokens_per_minute: 600}")
    async with ai_sidecar(config(service), clock=clock) as ai:
        first, second = _call(ai, 30), _call(ai, 30)
        await asyncio.wait_for(fake.requests_seen(2), 5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(ai, 1)  # needs 2.4 s of refill; its deadline is 1 s away
        patient = _call(ai, 30)
        await sleepers(clock)
        in_flight_while_waiting = len(fake.completions)
        await asyncio.gather(first, second)
        await clock.advance(2.4)
        reply = await asyncio.wait_for(patient, 5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "RATE_LIMITED"
    assert error_info(caught.value).metadata["deployment"] == "openai/fake-model"
    assert retry_delay(caught.value) == pytest.approx(2.4)
    assert in_flight_while_waiting == 2  # never more than the budget allows
    assert reply.content == "Hello from the fake model."
    assert len(fake.completions) == 3


async def test_the_reservation_is_settled_with_the_real_usage(fake: FakeLLM) -> None:
    service = model("openai", fake.url, extra="rate_limit: {tokens_per_minute: 600}")
    async with ai_sidecar(config(service), clock=FakeClock()) as ai:
        reply = await _call(ai, 10)
        tokens = _deployment(ai).tokens
        assert tokens is not None
        left = tokens.snapshot().available
    assert reply.usage.total_tokens == 9
    assert left == pytest.approx(600 - 9)


async def test_requests_per_minute_are_limited_per_deployment(fake: FakeLLM) -> None:
    service = model("openai", fake.url, extra="rate_limit: {requests_per_minute: 1}")
    async with ai_sidecar(config(service), clock=FakeClock()) as ai:
        await _call(ai, 5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(ai, 5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "RATE_LIMITED"
    assert retry_delay(caught.value) == pytest.approx(60)
    assert len(fake.completions) == 1


async def test_a_request_larger_than_the_whole_budget_is_refused_without_retry_info(
    fake: FakeLLM,
) -> None:
    service = model("openai", fake.url, extra="rate_limit: {tokens_per_minute: 100}")
    async with ai_sidecar(config(service), clock=FakeClock()) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(ai, 5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "TOKEN_LIMIT_EXCEEDED"
    assert retry_delay(caught.value) is None
    assert fake.completions == []


async def test_budgets_belong_to_each_deployment_not_the_service(fake: FakeLLM) -> None:
    service = model("openai", fake.url, extra="rate_limit: {requests_per_minute: 1}")
    async with ai_sidecar(config(service), clock=FakeClock()) as ai:
        for target in ("openai/model-a", "openai/model-b"):
            await ai.stub.Complete(ai_pb2.CompleteRequest(target=target, messages=user("hi")))
    assert [e.request.json()["model"] for e in fake.completions] == ["model-a", "model-b"]
