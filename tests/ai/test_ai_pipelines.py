"""Each AI deployment runs through a `StreamingPipeline` kept by its `ai_model` service: the
breakers AdminService and the metrics report are the ones that run, GenAI metrics are fed by
the pipelines' events, and an `Admission` settles each attempt the AI's way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, user
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support import error_info

from generated.integration.v1 import admin_pb2, admin_pb2_grpc, ai_pb2
from sidecar.ai import Deployment, ModelService, TokenLimits
from sidecar.backends.ai.base import Usage
from sidecar.backends.ai.echo import EchoProvider
from sidecar.errors import InvalidArgument, ResourceExhausted, SidecarError, Unavailable
from sidecar.observability.genai_metrics import GenAIAttempt, GenAIMetrics
from sidecar.resilience import (
    BulkheadOptions,
    CircuitBreakerOptions,
    CircuitState,
    StreamingOptions,
    StreamingPipeline,
    StreamOutcome,
)
from sidecar.testing import FakeClock

ALIAS = "  chat:\n    type: ai_alias\n    deployments: [openai]\n"
TRIP_AT_ONCE = "circuit_breaker: {failure_threshold: 1, reset_timeout: 30s}"


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def _service(**options: Any) -> ModelService:
    return ModelService(
        provider=EchoProvider(),
        model="m",
        circuit_breaker=CircuitBreakerOptions(failure_threshold=1, reset_timeout=30),
        bulkhead=BulkheadOptions(max_concurrent_calls=2, max_queued_calls=0),
        **options,
    )


# --- through the server ----------------------------------------------------------------


async def test_the_service_keeps_one_pipeline_per_deployment_shared_by_every_route(
    fake: FakeLLM,
) -> None:
    limits = "rate_limit: {requests_per_minute: 60, tokens_per_minute: 600}"
    async with ai_sidecar(config(model("openai", fake.url, extra=limits), ALIAS)) as ai:
        integration = ai.running.integrations.get("openai")
        assert integration is not None
        service: ModelService = integration.backend
        made_at_start = [p.name for p in service.pipelines()]
        await ai.stub.Complete(
            ai_pb2.CompleteRequest(target="openai/other", messages=user("hi"), max_tokens=20)
        )
        router = ai.running.servicers["integration.v1.AIService"].router
        routes = [router.route(target).deployments[0] for target in ("chat", "openai")]
        pipelines = service.pipelines()
    assert made_at_start == ["openai/fake-model"]  # the default deployment, from start-up
    assert [p.name for p in pipelines] == ["openai/fake-model", "openai/other"]
    assert routes[0].pipeline is routes[1].pipeline is pipelines[0]
    assert list(pipelines[0].rate_limiters) == ["requests", "tokens"]
    assert pipelines[0].rate_limiters is not pipelines[1].rate_limiters
    assert pipelines[0].bulkhead is not None
    assert pipelines[0].bulkhead is pipelines[1].bulkhead  # the service's, shared


async def test_admin_reports_the_deployment_breaker_that_runs(fake: FakeLLM) -> None:
    fake.default = Step(status=500)
    clock = FakeClock()
    services = config(model("openai", fake.url, extra=TRIP_AT_ONCE), ALIAS)
    async with ai_sidecar(services, clock=clock) as ai:
        with pytest.raises(grpc.aio.AioRpcError):
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="openai", messages=user("hi")))
        admin = admin_pb2_grpc.AdminServiceStub(ai.channel)
        service = await admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="openai"))
        alias = await admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="chat"))
        integration = ai.running.integrations.get("openai")
        assert integration is not None
        states = integration.backend.breaker_states()
    breaker = service.integration.circuit_breaker
    assert breaker.state == admin_pb2.CIRCUIT_STATE_OPEN
    assert (breaker.consecutive_failures, breaker.retry_after_seconds) == (1, 1)  # first break
    assert service.integration.HasField("bulkhead")
    assert service.integration.bulkhead.in_flight == 0  # released after the failure
    assert not alias.integration.HasField("circuit_breaker")  # an alias has none of its own
    assert states == [("openai/fake-model", CircuitState.OPEN)]


async def test_admin_lists_every_deployment_breaker_of_a_model_service(fake: FakeLLM) -> None:
    fake.default = Step(status=500)
    limits = "rate_limit: {requests_per_minute: 60, tokens_per_minute: 60000}"
    services = config(model("openai", fake.url, extra=f"{TRIP_AT_ONCE}\n{limits}"))
    async with ai_sidecar(services, clock=FakeClock()) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await ai.stub.Complete(
                ai_pb2.CompleteRequest(target="openai/other", messages=user("hi"), max_tokens=20)
            )
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        admin = admin_pb2_grpc.AdminServiceStub(ai.channel)
        reply = await admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="openai"))
    deployments = reply.integration.deployments
    assert [d.name for d in deployments] == ["openai/fake-model", "openai/other"]
    assert [d.circuit_breaker.state for d in deployments] == [
        admin_pb2.CIRCUIT_STATE_CLOSED,
        admin_pb2.CIRCUIT_STATE_OPEN,
    ]
    assert sorted(deployments[1].rate_limiters) == ["requests", "tokens"]
    assert deployments[1].rate_limiters["tokens"].capacity == 60000
    # The top-level view is the worst deployment's.
    assert reply.integration.circuit_breaker.state == admin_pb2.CIRCUIT_STATE_OPEN


async def test_admin_shows_the_token_bucket_of_a_limited_service(fake: FakeLLM) -> None:
    limits = "rate_limit: {requests_per_minute: 60, tokens_per_minute: 600}"
    async with ai_sidecar(config(model("openai", fake.url, extra=limits))) as ai:
        admin = admin_pb2_grpc.AdminServiceStub(ai.channel)
        reply = await admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="openai"))
    limiter = reply.integration.rate_limiter
    assert (limiter.enabled, limiter.capacity, limiter.tokens_per_second) == (True, 600, 10)


async def test_refusals_reach_the_genai_metrics_as_pipeline_events(fake: FakeLLM) -> None:
    fake.default = Step(status=500)
    reader = InMemoryMetricReader()
    services = config(model("openai", fake.url, extra=TRIP_AT_ONCE))
    async with ai_sidecar(services, clock=FakeClock(), metric_readers=[reader]) as ai:
        request = ai_pb2.CompleteRequest(target="openai", messages=user("hi"))
        reasons = []
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ai.stub.Complete(request)
            reasons.append(error_info(caught.value).reason)
        points = _points(reader)
    outcomes = {p.attributes["outcome"]: p.value for p in points["integration_ai_requests_total"]}
    assert reasons == ["UPSTREAM_UNAVAILABLE", "CIRCUIT_OPEN"]
    assert outcomes == {"UPSTREAM_UNAVAILABLE": 1, "CIRCUIT_OPEN": 1}
    (duration,) = points["gen_ai.client.operation.duration"]  # refusals have no duration
    assert duration.attributes["error.type"] == "UPSTREAM_UNAVAILABLE"


async def test_embeddings_are_measured_from_the_same_events(fake: FakeLLM) -> None:
    reader = InMemoryMetricReader()
    async with ai_sidecar(config(model("openai", fake.url)), metric_readers=[reader]) as ai:
        await ai.stub.Embed(ai_pb2.EmbedRequest(target="openai", inputs=["hello"]))
        points = _points(reader)
    (requests,) = points["integration_ai_requests_total"]
    assert (requests.attributes["operation"], requests.attributes["outcome"]) == (
        "embeddings",
        "OK",
    )
    assert "gen_ai.client.operation.time_to_first_chunk" not in points  # not a stream


# --- GenAI metrics from events ----------------------------------------------------------


@dataclass(frozen=True)
class _Metered:
    name: str = "svc/m"
    model: str = "m"
    provider_name: str = "echo"


async def test_a_settled_event_records_the_attempt_timed_by_the_pipeline_clock() -> None:
    clock = FakeClock()
    reader = InMemoryMetricReader()
    metrics = GenAIMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    pipeline = StreamingPipeline("svc/m", StreamingOptions(), clock=clock)
    pipeline.add_listener(metrics.listener(_Metered()), lifecycle=True)
    lease = await pipeline.admit(detail=GenAIAttempt("chat"))
    await clock.advance(0.5)
    lease.first_chunk()
    await clock.advance(1.5)
    lease.settle(StreamOutcome.SUCCESS, detail=GenAIAttempt("chat", "OK", Usage(3, 7), "m-2024"))
    (await pipeline.admit()).settle(StreamOutcome.SUCCESS)  # no GenAI detail: not an AI call
    points = _points(reader)
    (duration,) = points["gen_ai.client.operation.duration"]
    (first_chunk,) = points["gen_ai.client.operation.time_to_first_chunk"]
    assert (duration.sum, first_chunk.sum) == (2.0, 0.5)
    assert duration.attributes["gen_ai.response.model"] == "m-2024"
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": 3, "output": 7}
    (requests,) = points["integration_ai_requests_total"]
    assert requests.value == 1


# --- Admission: how an attempt is settled ------------------------------------------------


async def test_an_upstream_429_cools_the_deployment_down_without_counting_a_failure() -> None:
    clock = FakeClock()
    deployment = Deployment("svc", "m", _service(), clock)
    admission = await deployment.admit(10, None, wait=True)
    admission.failed(ResourceExhausted("slow down", reason="UPSTREAM_RATE_LIMITED", retry_after=7))
    with pytest.raises(ResourceExhausted) as caught:
        await deployment.admit(10, None, wait=True)
    assert (caught.value.reason, caught.value.retry_after) == ("UPSTREAM_RATE_LIMITED", 7)
    assert caught.value.metadata == {"deployment": "svc/m", "provider": "echo"}
    assert deployment.breaker is not None
    assert deployment.breaker.state is CircuitState.CLOSED
    await clock.advance(7)
    (await deployment.admit(10, None, wait=True)).succeeded(None)


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (Unavailable("down", reason="UPSTREAM_UNAVAILABLE"), True),
        (InvalidArgument("bad", reason="UPSTREAM_REJECTED"), False),
        (asyncio.CancelledError(), False),
    ],
)
async def test_only_upstream_trouble_counts_against_the_breaker(
    error: BaseException, counted: bool
) -> None:
    deployment = Deployment("svc", "m", _service(), FakeClock())
    (await deployment.admit(10, None, wait=True)).failed(error)
    assert deployment.breaker is not None
    assert (deployment.breaker.state is CircuitState.OPEN) is counted
    if counted:
        with pytest.raises(Unavailable) as caught:
            await deployment.admit(10, None, wait=True)
        assert caught.value.reason == "CIRCUIT_OPEN"


async def test_an_attempt_is_settled_once_and_its_slot_always_released() -> None:
    limits = TokenLimits(tokens_per_minute=600)
    deployment = Deployment("svc", "m", _service(limits=limits), FakeClock())
    assert deployment.bulkhead is not None and deployment.tokens is not None
    first = await deployment.admit(100, None, wait=True)
    with await deployment.admit(100, None, wait=True) as second:
        assert deployment.bulkhead.snapshot().in_flight == 2
        first.succeeded(Usage(10, 20))
        first.failed(Unavailable("late", reason="UPSTREAM_UNAVAILABLE"))  # changes nothing
        assert not second.committed
        second.first_chunk()
        assert second.committed
    assert second.settled and deployment.bulkhead.snapshot().in_flight == 0
    assert deployment.breaker is not None
    assert deployment.breaker.state is CircuitState.CLOSED
    assert deployment.tokens.snapshot().available == pytest.approx(600 - 30 - 100)


async def test_a_request_over_the_whole_token_budget_is_refused_by_name() -> None:
    deployment = Deployment(
        "svc", "m", _service(limits=TokenLimits(tokens_per_minute=100)), FakeClock()
    )
    with pytest.raises(SidecarError) as caught:
        await deployment.admit(101, None, wait=True)
    assert (caught.value.reason, caught.value.retry_after) == ("TOKEN_LIMIT_EXCEEDED", None)
    assert "101 tokens per minute" in caught.value.message
