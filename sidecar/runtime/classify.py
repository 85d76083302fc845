"""Which exceptions are upstream trouble: they count against the breaker and may be retried.

A caller's bad input (INVALID_ARGUMENT, NOT_FOUND, ...) never does, so one client sending
garbage cannot open the circuit for everyone.
"""

from __future__ import annotations

from sidecar.errors import SidecarError
from sidecar.resilience import Classification, ExecutionTimeout

__all__ = ["classify"]

_FAILURE = Classification(is_failure=True, retry_after=None)
_NOT_FAILURE = Classification(is_failure=False, retry_after=None)


def classify(exc: BaseException) -> Classification:
    """Classify an exception raised by a backend operation."""
    if isinstance(exc, SidecarError):
        if not exc.transient:
            return _NOT_FAILURE
        if exc.retry_after is None:
            return _FAILURE
        return Classification(is_failure=True, retry_after=exc.retry_after)
    if isinstance(exc, ExecutionTimeout | ConnectionError | TimeoutError | OSError):
        return _FAILURE
    return _NOT_FAILURE
