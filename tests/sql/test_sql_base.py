"""The helpers every SQL backend shares: the SQLSTATE table, command tags, and how much
statement timeout a deadline leaves."""

from __future__ import annotations

import pytest

from sidecar.backends.sql import (
    error_for_sqlstate,
    rows_affected,
    statement_timeout_ms,
    time_left,
)
from sidecar.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)
from sidecar.resilience import Deadline
from sidecar.testing import FakeClock


@pytest.mark.parametrize(
    ("sqlstate", "error", "reason"),
    [
        ("23505", AlreadyExists, "SQL_ERROR"),
        ("23503", FailedPrecondition, "SQL_ERROR"),
        ("23502", FailedPrecondition, "SQL_ERROR"),
        ("42601", InvalidArgument, "SQL_ERROR"),
        ("42P01", InvalidArgument, "SQL_ERROR"),
        ("42501", PermissionDenied, "SQL_ERROR"),
        ("22012", InvalidArgument, "SQL_ERROR"),
        ("0A000", InvalidArgument, "SQL_ERROR"),
        ("25006", PermissionDenied, "READ_ONLY"),
        ("40001", Aborted, "SQL_ERROR"),
        ("40P01", Aborted, "SQL_ERROR"),
        ("57014", DeadlineExceeded, "SQL_ERROR"),
        ("08006", Unavailable, "UPSTREAM_UNAVAILABLE"),
        ("57P01", Aborted, "SQL_ERROR"),  # this session was ended, not the database
        ("57P03", Unavailable, "UPSTREAM_UNAVAILABLE"),
        ("08P01", InvalidArgument, "SQL_ERROR"),
        ("53300", Unavailable, "SQL_ERROR"),
        ("28P01", Unavailable, "UPSTREAM_UNAVAILABLE"),  # the sidecar's own login refused
        ("28000", Unavailable, "UPSTREAM_UNAVAILABLE"),  # e.g. no client certificate
        ("53100", ResourceExhausted, "SQL_ERROR"),
        ("XX000", Unavailable, "SQL_ERROR"),
        ("P0001", FailedPrecondition, "SQL_ERROR"),
    ],
)
def test_sqlstate_maps_to_the_error_that_says_what_happened(
    sqlstate: str, error: type[SidecarError], reason: str
) -> None:
    mapped = error_for_sqlstate(sqlstate, "message", {"constraint": "c"})
    assert type(mapped) is error
    assert (mapped.reason, mapped.metadata) == (reason, {"sqlstate": sqlstate, "constraint": "c"})


def test_conflicts_are_for_the_caller_to_retry_not_the_breaker() -> None:
    assert not error_for_sqlstate("40001", "m").transient
    assert error_for_sqlstate("08006", "m").transient


@pytest.mark.parametrize(
    ("tag", "count"),
    [
        ("INSERT 0 3", 3),
        ("UPDATE 2", 2),
        ("DELETE 0", 0),
        ("SELECT 7", 7),
        ("MERGE 1", 1),
        ("COPY 10", 10),
        ("CREATE TABLE", 0),
        ("", 0),
    ],
)
def test_rows_affected_is_read_from_the_command_tag(tag: str, count: int) -> None:
    assert rows_affected(tag) == count


def test_the_statement_timeout_ends_a_little_before_the_deadline() -> None:
    assert statement_timeout_ms(10.0) == 9_900
    assert statement_timeout_ms(0.1) == 90
    assert statement_timeout_ms(0.0005) == 1


def test_no_time_left_is_deadline_exceeded_before_the_statement_runs() -> None:
    with pytest.raises(DeadlineExceeded):
        statement_timeout_ms(0.0)


def test_time_left_is_capped_by_the_request_timeout() -> None:
    clock = FakeClock()
    assert time_left(None, 30.0) == 30.0
    assert time_left(Deadline.after(None, clock), 30.0) == 30.0
    assert time_left(Deadline.after(60.0, clock), 30.0) == 30.0
    assert time_left(Deadline.after(2.0, clock), 30.0) == 2.0
