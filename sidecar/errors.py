"""Domain errors raised by backends and servicers; the error-mapping interceptor turns them
into gRPC statuses, so nothing below the servicers knows about gRPC.

    SidecarError
    ├── InvalidArgument        caller's bad input              (never counts as upstream failure)
    ├── NotFound               unknown target, missing resource
    ├── AlreadyExists
    ├── FailedPrecondition     wrong type, sidecar misconfigured for this call
    ├── Aborted                concurrency conflict (serialization failure, deadlock): retry
    │                          the whole transaction, from the caller
    ├── ResourceExhausted      local limits (sizes, queues)
    │   └── UpstreamThrottled  the upstream asked us to slow down                (transient)
    ├── Unauthenticated
    ├── PermissionDenied
    ├── Unimplemented          the backend lacks an optional capability
    ├── Unavailable            upstream down, connection lost, shutting down   (transient)
    ├── DeadlineExceeded       upstream too slow                               (transient)
    └── DataLoss               stored data read back corrupt (a checksum that does not match)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorKind",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SidecarError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UpstreamThrottled",
]


class ErrorKind(enum.Enum):
    """What went wrong, in the vocabulary of gRPC status codes but free of grpc imports."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    DATA_LOSS = "DATA_LOSS"


class SidecarError(Exception):
    """Base of every error the sidecar answers on purpose.

    Args:
        message: human-readable text, safe to send to the caller (never secrets or payloads).
        reason: stable UPPER_SNAKE reason, sent as `ErrorInfo.reason`.
        metadata: extra `ErrorInfo.metadata` (for example `target`, `field`).
        retry_after: seconds after which a retry may succeed, sent as `RetryInfo`.
    """

    kind: ErrorKind = ErrorKind.UNAVAILABLE
    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after

    @property
    def advised_retry_after(self) -> float | None:
        """The wait sent to the caller as `RetryInfo` (None: no RetryInfo)."""
        return self.retry_after


class InvalidArgument(SidecarError):
    kind = ErrorKind.INVALID_ARGUMENT


class NotFound(SidecarError):
    kind = ErrorKind.NOT_FOUND


class AlreadyExists(SidecarError):
    kind = ErrorKind.ALREADY_EXISTS


class FailedPrecondition(SidecarError):
    kind = ErrorKind.FAILED_PRECONDITION


class Aborted(SidecarError):
    """A conflict with concurrent work; the caller should retry the whole unit (a
    transaction), so the sidecar itself never retries it and it never trips a breaker."""

    kind = ErrorKind.ABORTED


class ResourceExhausted(SidecarError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


class UpstreamThrottled(ResourceExhausted):
    """The upstream asked the sidecar to slow down (AWS throttling, HTTP 429): upstream
    trouble, so the pipeline retries it (after `retry_after` when given) and the breaker
    counts it; the caller sees RESOURCE_EXHAUSTED once retries run out, with a RetryInfo
    even when the upstream said nothing (most AWS throttles carry no Retry-After)."""

    transient = True
    default_retry_after = 1.0
    """Seconds advised when the upstream gave none: botocore's standard retry mode backs off
    up to 1 s before its first retry."""

    @property
    def advised_retry_after(self) -> float:
        return self.default_retry_after if self.retry_after is None else self.retry_after


class Unauthenticated(SidecarError):
    kind = ErrorKind.UNAUTHENTICATED


class PermissionDenied(SidecarError):
    kind = ErrorKind.PERMISSION_DENIED


class Unimplemented(SidecarError):
    kind = ErrorKind.UNIMPLEMENTED


class Unavailable(SidecarError):
    kind = ErrorKind.UNAVAILABLE
    transient = True


class DeadlineExceeded(SidecarError):
    kind = ErrorKind.DEADLINE_EXCEEDED
    transient = True


class DataLoss(SidecarError):
    kind = ErrorKind.DATA_LOSS
