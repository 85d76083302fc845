"""The request-duration histogram: inclusive upper bounds, cumulative counts, +Inf."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.observability.durations import RequestDurations


def test_durations_fall_in_inclusive_buckets_counted_cumulatively() -> None:
    durations = RequestDurations([0.001, 0.01])
    for seconds in (0.0005, 0.001, 0.002, 0.01, 3.0):
        durations.observe("redis", "CacheService.Get", seconds)
    durations.observe("cache", "CacheService.Set", 0.0001)
    series = {(s.service, s.operation): s for s in durations.series()}
    get = series[("redis", "CacheService.Get")]
    assert get.buckets == ((0.001, 2), (0.01, 4), (float("inf"), 5))
    assert (get.count, round(get.sum, 6)) == (5, 3.0135)
    assert series[("cache", "CacheService.Set")].count == 1


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        RequestDurations([0.01, 0.001])


def test_prometheus_exposition_is_a_histogram() -> None:
    durations = RequestDurations([0.001])
    durations.observe("redis", "CacheService.Get", 0.0002)
    registry = CollectorRegistry()
    registry.register(durations.prometheus_collector())
    text = generate_latest(registry).decode()
    assert "# TYPE integration_request_duration_seconds histogram" in text
    assert (
        'integration_request_duration_seconds_bucket{le="0.001",operation="CacheService.Get",'
        'service="redis"} 1.0'
    ) in text
    assert 'integration_request_duration_seconds_count{operation="CacheService.Get",' in text
