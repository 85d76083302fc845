"""Health follows the circuit breaker: an integration whose breaker refuses calls is
NOT_SERVING (the process stays SERVING), and turns SERVING when the break has run out.

The SQLite service answers its probe the whole time; only its breaker changes. The clock is
the injected FakeClock: no sleeps."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health, health_pb2

from sidecar.config import parse_config
from sidecar.errors import Unavailable
from sidecar.runtime.health import HealthMonitor
from sidecar.runtime.integrations import build_integrations
from sidecar.testing import FakeClock

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

CONFIG = """
integration:
  circuit_breaker: {failure_threshold: 2, reset_timeout: 30s}
  retry_policy: {max_retries: 0}
services:
  orders: {type: sql, backend: sqlite}
"""


async def status(servicer: health.aio.HealthServicer, name: str) -> int:
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
    return int(reply.status)


@pytest.fixture
async def monitored() -> tuple[HealthMonitor, health.aio.HealthServicer, object, FakeClock]:
    clock = FakeClock()
    integrations = build_integrations(parse_config(CONFIG), clock=clock)
    servicer = health.aio.HealthServicer()
    monitor = HealthMonitor(
        integrations,
        servicer,
        {"sql": "integration.v1.SqlService"},
        check_interval=1.0,
        timeout=1.0,
        consecutive_failures=1,
    )
    await monitor.publish_initial()
    yield monitor, servicer, integrations.get("orders"), clock
    await integrations.close()


async def fail_twice(item: object) -> None:
    async def down() -> None:
        raise Unavailable("upstream down", reason="UPSTREAM_UNAVAILABLE")

    for _ in range(2):
        with pytest.raises(Unavailable):
            await item.pipeline.execute(down)  # type: ignore[attr-defined]


async def test_an_open_breaker_turns_its_integration_not_serving_until_the_break_ends(
    monitored: tuple[HealthMonitor, health.aio.HealthServicer, object, FakeClock],
) -> None:
    monitor, servicer, item, clock = monitored
    await monitor.check_once()
    assert await status(servicer, "orders") == SERVING

    await fail_twice(item)
    await monitor.check_once()
    assert await status(servicer, "orders") == NOT_SERVING
    assert await status(servicer, "integration.v1.SqlService") == NOT_SERVING
    assert await status(servicer, "") == SERVING  # an upstream's outage is not the pod's

    await clock.advance(0.9)  # the first break is min_reset_timeout, 1 s by default
    await monitor.check_once()
    assert await status(servicer, "orders") == NOT_SERVING

    await clock.advance(0.2)  # the break is over: the next call is admitted as a probe
    await monitor.check_once()
    assert await status(servicer, "orders") == SERVING


async def test_an_isolated_breaker_is_not_serving_until_reset(
    monitored: tuple[HealthMonitor, health.aio.HealthServicer, object, FakeClock],
) -> None:
    monitor, servicer, item, _ = monitored
    breaker = item.pipeline.circuit_breaker  # type: ignore[attr-defined]
    breaker.isolate()
    await monitor.check_once()
    assert await status(servicer, "orders") == NOT_SERVING
    breaker.reset()
    await monitor.check_once()
    assert await status(servicer, "orders") == SERVING


async def test_every_service_of_the_embedded_defaults_answers_its_health_check() -> None:
    """Each backend the defaults build answers `ping` (a queue once had none: the monitor's
    task died at its first check, and shutdown hung on it)."""
    from sidecar.config import load_config

    integrations = build_integrations(load_config(None), clock=FakeClock())
    servicer = health.aio.HealthServicer()
    monitor = HealthMonitor(
        integrations, servicer, {}, check_interval=1.0, timeout=1.0, consecutive_failures=1
    )
    try:
        await monitor.publish_initial()
        await monitor.check_once()
        assert [item.name for item in integrations if not item.healthy] == []
    finally:
        await integrations.close()
