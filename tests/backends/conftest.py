"""Fixtures of the backend unit tests: a fake clock. The conformance suites, which every
backend of a capability must pass, live in tests/conformance/<capability>/."""

from __future__ import annotations

import pytest

from sidecar.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
