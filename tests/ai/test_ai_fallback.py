"""Routing and resilience of AI calls, timed with FakeClock: Retry-After, cooldowns,
per-deployment breakers and fallback along an alias."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, read_stream, sleepers, text_of, user
from support import error_info, retry_delay

from generated.integration.v1 import ai_pb2
from sidecar.testing import FakeClock

ALIAS = """\
  chat:
    type: ai_alias
    retry_policy: {max_retries: 0}
    deployments: [primary, backup]
"""


async def test_429_with_retry_after_succeeds_after_the_advertised_wait(fake: FakeLLM) -> None:
    fake.then(Step(status=429, retry_after=2))
    clock = FakeClock()
    service = model("openai", fake.url, retry="{max_retries: 2, base_delay: 100ms, jitter: false}")
    async with ai_sidecar(config(service), clock=clock) as ai:
        call = asyncio.ensure_future(
            ai.stub.Complete(
                ai_pb2.CompleteRequest(target="openai", messages=user("hi")), timeout=20
            )
        )
        await sleepers(clock)
        await clock.advance(1.9)
        waited_too_little = call.done()
        await clock.advance(0.1)
        reply = await asyncio.wait_for(call, 5)
    assert not waited_too_little
    assert reply.content == "Hello from the fake model."
    assert len(fake.completions) == 2


async def test_429_longer_than_the_deadline_answers_resource_exhausted_with_retry_info(
    fake: FakeLLM,
) -> None:
    fake.then(Step(status=429, retry_after=30))
    service = model("openai", fake.url, retry="{max_retries: 2, base_delay: 100ms}")
    async with ai_sidecar(config(service), clock=FakeClock()) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(
                ai_pb2.CompleteRequest(target="openai", messages=user("hi")), timeout=5
            )
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(error)
    assert info.reason == "UPSTREAM_RATE_LIMITED"
    assert (info.metadata["provider"], info.metadata["upstream_status"]) == ("openai", "429")
    assert retry_delay(error) == pytest.approx(30)
    assert len(fake.completions) == 1


async def test_a_429_cools_the_deployment_down_so_the_alias_uses_the_next(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.then(Step(status=429, retry_after=60))
    clock = FakeClock()
    services = (model("primary", fake.url), model("backup", backup.url), ALIAS)
    async with ai_sidecar(config(*services), clock=clock) as ai:
        request = ai_pb2.CompleteRequest(target="chat", messages=user("hi"))
        during = [(await ai.stub.Complete(request)).deployment for _ in range(3)]
        await clock.advance(60)
        after = (await ai.stub.Complete(request)).deployment
    assert during == ["backup/fake-model"] * 3
    assert after == "primary/fake-model"
    assert len(fake.completions) == 2  # the 429, then nothing until the cooldown ended


async def test_persistent_500_opens_the_breaker_and_the_alias_falls_back_until_the_probe(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.default = Step(status=500)
    clock = FakeClock()
    breaker = "circuit_breaker: {failure_threshold: 2, reset_timeout: 30s}"
    services = (model("primary", fake.url, extra=breaker), model("backup", backup.url), ALIAS)
    async with ai_sidecar(config(*services), clock=clock) as ai:
        request = ai_pb2.StreamCompleteRequest(target="chat", messages=user("hi"))

        async def answer() -> str:
            messages, error = await read_stream(ai.stub.StreamComplete(request))
            assert error is None
            return f"{text_of(messages)} from {messages[-1].end.deployment}"

        tripping = [await answer() for _ in range(2)]
        while_open = [await answer() for _ in range(3)]
        reached_while_open = len(fake.completions)
        await clock.advance(30)
        probe = await answer()
        after_probe = await answer()
    served = [*tripping, *while_open, probe, after_probe]
    assert served == ["Backup answer. from backup/fake-model"] * 7
    assert reached_while_open == 2  # the two failures that tripped it, then nothing
    assert len(fake.completions) == 3  # the half-open probe, then open again


async def test_with_every_breaker_of_an_alias_open_calls_go_through_them_in_panic_mode(
    fake: FakeLLM, backup: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake.default = backup.default = Step(status=500)
    breaker = "circuit_breaker: {failure_threshold: 1, min_reset_timeout: 30s}"
    services = (
        model("primary", fake.url, extra=breaker),
        model("backup", backup.url, extra=breaker),
        ALIAS,
    )
    clock = FakeClock()
    async with ai_sidecar(config(*services), clock=clock) as ai:
        request = ai_pb2.CompleteRequest(target="chat", messages=user("hi"))
        with pytest.raises(grpc.aio.AioRpcError):
            await ai.stub.Complete(request)  # both fail once: both breakers open
        states = [
            state
            for name in ("primary", "backup")
            for _, state in ai.running.integrations.get(name).backend.breaker_states()  # type: ignore[union-attr]
        ]
        fake.default = backup.default = Step()
        caplog.set_level(logging.INFO, logger="sidecar.ai")
        in_panic = await ai.stub.Complete(request)
        entered = [r.getMessage() for r in caplog.records if "panic mode" in r.getMessage()]
        await clock.advance(10)  # no call needed an open breaker for 10 s
        after = await ai.stub.Complete(request)
    assert [state.name for state in states] == ["OPEN", "OPEN"]
    # Without panic mode the alias would refuse for 30 s; the answer comes from the first
    # deployment by priority, through its open breaker.
    assert in_panic.content == "Hello from the fake model."
    assert in_panic.deployment.startswith("primary")
    assert entered == ["deployments with open breakers are tried as a last resort (panic mode)"]
    # The panic call's success was evidence: primary's breaker half-opened, the next call was
    # its real probe, which closed it, and the alias left panic mode.
    assert after.deployment.startswith("primary")
    assert len(fake.completions) == 3 and len(backup.completions) == 1
    assert any("panic mode over" in r.getMessage() for r in caplog.records)


async def test_a_deployment_with_an_open_breaker_is_the_last_resort_when_the_others_fail(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.default = Step(status=500)
    breaker = "circuit_breaker: {failure_threshold: 1, min_reset_timeout: 30s}"
    services = (model("primary", fake.url, extra=breaker), model("backup", backup.url), ALIAS)
    async with ai_sidecar(config(*services), clock=FakeClock()) as ai:
        request = ai_pb2.CompleteRequest(target="chat", messages=user("hi"))
        first = await ai.stub.Complete(request)  # primary fails (opens), backup answers
        fake.default, backup.default = Step(), Step(status=500)
        second = await ai.stub.Complete(request)  # backup fails: primary, open, is tried
    assert first.deployment.startswith("backup")
    assert second.deployment.startswith("primary")
    assert len(fake.completions) == 2 and len(backup.completions) == 2


async def test_every_deployment_failing_answers_unavailable_naming_them(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.default = backup.default = Step(status=503)
    services = (model("primary", fake.url), model("backup", backup.url), ALIAS)
    async with ai_sidecar(config(*services)) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="chat", messages=user("hi")))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info.reason == "UPSTREAM_UNAVAILABLE"
    assert info.metadata["deployments_tried"] == "primary/fake-model,backup/fake-model"
    assert info.metadata["target"] == "chat"


async def test_the_callers_bad_request_is_not_retried_elsewhere(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.then(Step(status=400))
    services = (model("primary", fake.url), model("backup", backup.url), ALIAS)
    async with ai_sidecar(config(*services)) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="chat", messages=user("hi")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "UPSTREAM_REJECTED"
    assert "fake upstream answered 400" in (caught.value.details() or "")
    assert backup.completions == []


async def test_an_open_breaker_on_a_single_deployment_answers_circuit_open(fake: FakeLLM) -> None:
    fake.default = Step(status=500)
    clock = FakeClock()
    breaker = "circuit_breaker: {failure_threshold: 1, min_reset_timeout: 30s}"
    async with ai_sidecar(config(model("openai", fake.url, extra=breaker)), clock=clock) as ai:
        request = ai_pb2.CompleteRequest(target="openai", messages=user("hi"))
        with pytest.raises(grpc.aio.AioRpcError):
            await ai.stub.Complete(request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(request)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "CIRCUIT_OPEN"
    assert error_info(caught.value).metadata["deployment"] == "openai/fake-model"
    assert retry_delay(caught.value) == pytest.approx(30)
    assert len(fake.completions) == 1
