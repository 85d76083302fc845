"""SQLSTATE -> `sidecar.errors`: the one table every SQL connection type and SQL backend use
(asyncpg errors carry a SQLSTATE; the SQLite backend maps its own errors onto the same codes),
so a unique violation is ALREADY_EXISTS whichever database answered."""

from __future__ import annotations

from collections.abc import Mapping

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

__all__ = ["error_for_sqlstate"]


def error_for_sqlstate(
    sqlstate: str, message: str, metadata: Mapping[str, str] | None = None
) -> SidecarError:
    """The domain error for a database error, by SQLSTATE (class = its first two characters).

    | SQLSTATE                     | error                                        |
    |------------------------------|----------------------------------------------|
    | 23505 unique violation       | AlreadyExists                                |
    | other 23 integrity           | FailedPrecondition                           |
    | 22 data, 42 syntax/access    | InvalidArgument (42501 PermissionDenied)     |
    | 0A feature not supported     | InvalidArgument                              |
    | 25006 read-only transaction  | PermissionDenied, reason READ_ONLY           |
    | 40001, 40P01, other 40       | Aborted (retry the transaction)              |
    | 57014 query canceled         | DeadlineExceeded                             |
    | 57P01 session terminated     | Aborted (the server ended this session only) |
    | 08P01 protocol violation     | InvalidArgument (the request was malformed)  |
    | 08 connection, other 57P0x   | Unavailable, reason UPSTREAM_UNAVAILABLE     |
    | 53300 too many connections   | Unavailable                                  |
    | 28 login refused             | Unavailable, reason UPSTREAM_UNAVAILABLE     |
    | 53 insufficient resources    | ResourceExhausted                            |
    | 58, XX system / internal     | Unavailable                                  |
    | anything else                | FailedPrecondition                           |

    The SQLSTATE is always in `metadata["sqlstate"]`; the reason is SQL_ERROR unless noted.
    """
    meta = {"sqlstate": sqlstate, **(metadata or {})}
    cls = sqlstate[:2]
    reason = "SQL_ERROR"
    error_type: type[SidecarError]
    if sqlstate == "23505":
        error_type = AlreadyExists
    elif sqlstate == "25006":
        error_type, reason = PermissionDenied, "READ_ONLY"
    elif sqlstate == "42501":
        error_type = PermissionDenied
    elif sqlstate == "57014":
        error_type = DeadlineExceeded
    elif sqlstate == "57P01":
        # An administrator, a shutdown or the caller's own pg_terminate_backend ended this
        # one session: a lost session, not a lost database (the next call reconnects).
        error_type = Aborted
    elif sqlstate == "08P01":
        error_type = InvalidArgument
    elif cls == "08" or sqlstate.startswith("57P"):
        error_type, reason = Unavailable, "UPSTREAM_UNAVAILABLE"
    elif cls == "28":
        # The database refused the sidecar's own login (password, client certificate,
        # pg_hba.conf): only connecting raises it, and for the caller the upstream is out
        # of reach, as with a refused TCP connection.
        error_type, reason = Unavailable, "UPSTREAM_UNAVAILABLE"
    elif sqlstate == "53300" or cls in ("58", "XX"):
        error_type = Unavailable
    elif cls == "23":
        error_type = FailedPrecondition
    elif cls in ("22", "42", "0A"):
        error_type = InvalidArgument
    elif cls == "40":
        error_type = Aborted
    elif cls == "53":
        error_type = ResourceExhausted
    else:
        error_type = FailedPrecondition
    return error_type(message, reason=reason, metadata=meta)
