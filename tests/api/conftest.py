"""Fixtures for the api tests: a real local upstream (`api.upstream.Upstream`), stopped at
the end of the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api.upstream import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    try:
        yield server
    finally:
        server.stop()
