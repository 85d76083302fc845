"""The statement timeout of a SQL call, shared by the SQL connection types (their sessions'
default) and backends (a call's own), so that the two agree to the millisecond and a call
whose timeout is the session's default sends nothing."""

from __future__ import annotations

import math

from sidecar.errors import DeadlineExceeded

__all__ = ["statement_timeout_ms"]

# The statement timeout ends this much before the caller's deadline (at most this fraction of
# the time left), so the database's "canceling statement" reaches the caller in time.
_TIMEOUT_MARGIN = 0.1
_TIMEOUT_MARGIN_FRACTION = 0.1


def statement_timeout_ms(timeout: float) -> int:
    """Milliseconds of statement timeout for `timeout` seconds left: slightly less, >= 1.

    Raises:
        DeadlineExceeded: no time is left at all.
    """
    if timeout <= 0:
        raise DeadlineExceeded(
            "the deadline passed before the statement ran", reason="DEADLINE_EXCEEDED"
        )
    margin = min(_TIMEOUT_MARGIN, timeout * _TIMEOUT_MARGIN_FRACTION)
    return max(1, math.floor((timeout - margin) * 1000))
