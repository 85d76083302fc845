"""RecoveryProber: while a breaker is open its upstream is probed after 250 ms, then every
500 ms; the first probe that gets an answer half-opens the breaker, so calls flow again
within a second of the upstream's return however long the outage was.

A cache on the test Redis behind the fault-injecting proxy: the outage is the proxy refusing
connections. The clock is the injected FakeClock; probes are counted by a spy on the
connection's ping (the real ping to the real Redis still runs)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from faultproxy import FaultProxy
from redis_server import redis_address, unique_prefix

from sidecar.config import parse_config
from sidecar.resilience import CircuitBreaker, CircuitState
from sidecar.runtime.integrations import Integrations, build_integrations
from sidecar.runtime.recovery import RecoveryProber
from sidecar.testing import FakeClock

__all__ = ["redis_address"]


@dataclass
class Guarded:
    prober: RecoveryProber
    breaker: CircuitBreaker
    proxy: FaultProxy
    clock: FakeClock
    integrations: Integrations
    pings: list[float]


@pytest.fixture
async def guarded(redis_address: tuple[str, int]) -> AsyncIterator[Guarded]:
    clock = FakeClock()
    async with FaultProxy(*redis_address) as proxy:
        config = f"""
integration:
  circuit_breaker: {{failure_threshold: 1, min_reset_timeout: 30s}}
services:
  sessions:
    type: cache
    backend: redis
    host: {proxy.host}
    port: {proxy.port}
    key_prefix: "{unique_prefix()}"
"""
        integrations = build_integrations(parse_config(config), clock=clock)
        item = integrations.get("sessions")
        assert item is not None and item.pipeline is not None
        breaker = item.pipeline.circuit_breaker
        assert breaker is not None
        connection = integrations.connections.get("sessions")
        real_ping = connection.ping
        pings: list[float] = []

        async def counted_ping() -> None:
            pings.append(clock.monotonic())
            await real_ping()

        connection.ping = counted_ping  # type: ignore[method-assign]
        await real_ping()  # the link is open before the outage
        prober = RecoveryProber(integrations, timeout=0.5)
        try:
            yield Guarded(prober, breaker, proxy, clock, integrations, pings)
        finally:
            await integrations.close()


async def trip(guarded: Guarded) -> None:
    guarded.breaker.acquire()
    guarded.breaker.record_failure()
    assert guarded.breaker.state is CircuitState.OPEN


async def tick(guarded: Guarded, seconds: float = 0.25) -> None:
    await guarded.clock.advance(seconds)
    await guarded.prober.check_once()


async def test_nothing_is_probed_while_every_breaker_is_closed(guarded: Guarded) -> None:
    for _ in range(8):
        await tick(guarded)
    assert guarded.pings == []


async def test_an_open_breaker_half_opens_within_a_second_of_the_upstream_returning(
    guarded: Guarded,
) -> None:
    guarded.proxy.paused = False
    await guarded.proxy.stop_accepting()
    await guarded.proxy.cut()
    await trip(guarded)
    for _ in range(40):  # a 10 s outage
        await tick(guarded)
    probe_times = [round(t, 2) for t in guarded.pings]
    # at once, then every 0.5 s: 20 probes in 10 s, not 40
    assert probe_times[:4] == [0.25, 0.75, 1.25, 1.75]
    assert all(b - a <= 0.5 for a, b in itertools.pairwise(probe_times))
    assert len(probe_times) == 20
    assert guarded.breaker.state is CircuitState.OPEN  # its 30 s break is far from over

    await guarded.proxy.start_accepting()  # the upstream is back
    returned = guarded.clock.monotonic()
    while guarded.breaker.state is CircuitState.OPEN:
        assert guarded.clock.monotonic() - returned <= 0.5
        await tick(guarded)
    assert guarded.breaker.state is CircuitState.HALF_OPEN
    guarded.breaker.acquire()  # the next real call is the probe
    guarded.breaker.record_success()
    assert guarded.breaker.state is CircuitState.CLOSED
    pings = len(guarded.pings)
    await tick(guarded)
    assert len(guarded.pings) == pings  # closed again: probing stopped
