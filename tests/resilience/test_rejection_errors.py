"""The core's own errors carry a machine-readable reason and a retry hint."""

from __future__ import annotations

import pytest

from sidecar.resilience import (
    BulkheadFullError,
    CircuitOpenError,
    ExecutionRejected,
    ExecutionTimeout,
    RateLimitedError,
)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CircuitOpenError, "CIRCUIT_OPEN"),
        (RateLimitedError, "RATE_LIMITED"),
        (BulkheadFullError, "BULKHEAD_FULL"),
    ],
)
def test_rejections_share_a_base_and_carry_reason_and_retry_after(
    error: type[ExecutionRejected], reason: str
) -> None:
    exc = error(retry_after=2.5)
    assert (isinstance(exc, ExecutionRejected), exc.reason, exc.retry_after) == (True, reason, 2.5)


def test_rejection_retry_after_defaults_to_unknown() -> None:
    assert BulkheadFullError().retry_after is None


def test_rejection_keeps_a_given_message() -> None:
    assert str(RateLimitedError("queue is full")) == "queue is full"


def test_attempt_timeout_is_not_a_caller_deadline() -> None:
    exc = ExecutionTimeout(caller_deadline=False, timeout=1.5)
    assert (exc.reason, exc.caller_deadline, str(exc)) == (
        "DEADLINE_EXCEEDED",
        False,
        "attempt timed out after 1.500s",
    )


def test_caller_deadline_timeout_says_deadline_exceeded() -> None:
    assert str(ExecutionTimeout(caller_deadline=True)) == "deadline exceeded"


def test_timeout_is_not_a_rejection() -> None:
    assert not isinstance(ExecutionTimeout(caller_deadline=True), ExecutionRejected)
