"""Shared fixtures: every resilience test runs on a fake clock, never on real time."""

from __future__ import annotations

import pytest

from sidecar.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
