"""How an attempt ended, as the pipeline needs to know it, and which attempt is running.

The resilience core cannot tell a caller's bad input from an upstream outage; the backend's
`classify` function can. It returns a `Classification` for each exception, and the pipeline
acts on that alone: failures count against the breaker and may be retried, anything else is
re-raised at once. The attempt number lives in a context variable (Dapr's `GetAttempt`), so
backends and loggers can read it without it being threaded through every call.

Usage:

    TRANSIENT = Classification(is_failure=True)
    CALLER_ERROR = Classification(is_failure=False)

    def classify(exc: BaseException) -> Classification:
        return TRANSIENT if isinstance(exc, ConnectionError) else CALLER_ERROR
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

from sidecar.resilience.errors import ExecutionRejected, ExecutionTimeout

__all__ = ["Classification", "current_attempt", "judge"]


@dataclass(frozen=True, slots=True)
class Classification:
    """What an exception from the operation means for resilience.

    Attributes:
        is_failure: Upstream trouble: counts against the breaker and may be retried.
            False for the caller's own errors (bad input, not found, ...).
        retry_after: A delay the server asked for (Retry-After, RetryInfo), if any.
    """

    is_failure: bool
    retry_after: float | None = None


current_attempt: ContextVar[int] = ContextVar("current_attempt", default=0)
"""The 1-based number of the attempt running in this context; 0 outside any attempt."""


_FINAL: Final = Classification(is_failure=False)
_RETRYABLE: Final = Classification(is_failure=True)


def judge(
    exc: BaseException, classify: Callable[[BaseException], Classification]
) -> Classification:
    """What an attempt's exception means, the core's own errors first.

    A rejection is final (never retried) and so is the caller's deadline; a per-attempt
    timeout is an upstream failure worth retrying. Anything else is up to `classify`.
    """
    if isinstance(exc, ExecutionTimeout):
        return _FINAL if exc.caller_deadline else _RETRYABLE
    if isinstance(exc, ExecutionRejected):
        return _FINAL
    return classify(exc)
