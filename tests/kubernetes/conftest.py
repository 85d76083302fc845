"""Shared by the Kubernetes tests: `validate`, schema validation in 1.29 and the newest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_schemas import validate_object


@pytest.fixture
def validate() -> Callable[[dict[str, Any]], None]:
    """`validate(obj)` raises AssertionError unless obj is valid in 1.29 and the newest."""
    return validate_object
