"""GenAI metrics of AI calls: requests, time to first chunk, duration and tokens per model
and provider (OpenTelemetry GenAI names), cache lookups and breaker state per deployment."""

from __future__ import annotations

import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, metric_points, model, read_stream, user
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from generated.integration.v1 import ai_pb2


async def test_a_streamed_call_records_genai_metrics_per_model_and_provider(
    fake: FakeLLM,
) -> None:
    reader = InMemoryMetricReader()
    async with ai_sidecar(config(model("openai", fake.url)), metric_readers=[reader]) as ai:
        await read_stream(
            ai.stub.StreamComplete(
                ai_pb2.StreamCompleteRequest(target="openai", messages=user("hi"))
            )
        )
        points = metric_points(reader)
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "fake-model",
        "gen_ai.response.model": "fake-model",
        "deployment": "openai/fake-model",
    }
    (duration,) = points["gen_ai.client.operation.duration"]
    (first_chunk,) = points["gen_ai.client.operation.time_to_first_chunk"]
    assert dict(duration.attributes) == dict(first_chunk.attributes) == expected
    assert 0 < first_chunk.sum <= duration.sum
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": 4, "output": 5}
    (requests,) = points["integration_ai_requests_total"]
    assert requests.attributes["outcome"] == "OK" and requests.value == 1
    (breaker,) = points["integration_ai_circuit_breaker_state"]
    assert (breaker.attributes["deployment"], breaker.value) == ("openai/fake-model", 0)


async def test_failures_are_counted_by_reason_with_error_type(fake: FakeLLM) -> None:
    fake.then(Step(status=503))
    reader = InMemoryMetricReader()
    async with ai_sidecar(config(model("openai", fake.url)), metric_readers=[reader]) as ai:
        with pytest.raises(Exception):  # noqa: B017 - the status is tested elsewhere
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="openai", messages=user("hi")))
        points = metric_points(reader)
    (requests,) = points["integration_ai_requests_total"]
    assert requests.attributes["outcome"] == "UPSTREAM_UNAVAILABLE"
    (duration,) = points["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "UPSTREAM_UNAVAILABLE"


async def test_response_cache_lookups_are_counted_as_hits_and_misses(fake: FakeLLM) -> None:
    alias = """\
  cache:
    type: cache
  chat:
    type: ai_alias
    deployments: [openai]
    cache: {target: cache}
"""
    reader = InMemoryMetricReader()
    async with ai_sidecar(config(model("openai", fake.url), alias), metric_readers=[reader]) as ai:
        for _ in range(3):
            await ai.stub.Complete(
                ai_pb2.CompleteRequest(target="chat", messages=user("hi"), temperature=0)
            )
        points = metric_points(reader)
    results = {
        p.attributes["result"]: p.value for p in points["integration_ai_response_cache_total"]
    }
    assert results == {"miss": 1, "hit": 2}
