"""`integration_circuit_breaker_state` and `integration_resilience_events_total` report the
AI deployments' breakers (the ones that run), not a pipeline of the service itself."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, user
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from generated.integration.v1 import ai_pb2
from sidecar.testing import FakeClock

ALIAS = "  chat:\n    type: ai_alias\n    deployments: [openai]\n"


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


async def test_the_breaker_gauge_and_events_name_each_deployment(fake: FakeLLM) -> None:
    fake.default = Step(status=500)
    reader = InMemoryMetricReader()
    breaker = "circuit_breaker: {failure_threshold: 1, reset_timeout: 30s}"
    services = config(model("openai", fake.url, extra=breaker), ALIAS)
    async with ai_sidecar(services, clock=FakeClock(), metric_readers=[reader]) as ai:
        with pytest.raises(grpc.aio.AioRpcError):
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="openai", messages=user("hi")))
        integration = ai.running.integrations.get("openai")
        assert integration is not None and integration.pipeline is None
        gauge = _points(reader, "integration_circuit_breaker_state")
        events = _points(reader, "integration_resilience_events_total")
    assert {p.attributes["service"]: p.value for p in gauge} == {"openai/fake-model": 1}
    assert {(p.attributes["service"], p.attributes["event"]): p.value for p in events} == {
        ("openai/fake-model", "opened"): 1
    }
