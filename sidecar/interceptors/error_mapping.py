"""Turn any exception that leaves a servicer into a gRPC status with `google.rpc.Status`
details: an `ErrorInfo` always, a `RetryInfo` when coming back later may succeed.

Domain errors and resilience rejections map to the code that says what happened; anything
else is a bug and answers INTERNAL with no internals in the message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sidecar.errors import ErrorKind, SidecarError
from sidecar.resilience import (
    BulkheadFullError,
    CircuitOpenError,
    ExecutionRejected,
    ExecutionTimeout,
    RateLimitedError,
)

__all__ = ["DOMAIN", "status_for"]

DOMAIN = "integration.v1"

_CODES: Mapping[ErrorKind, grpc.StatusCode] = {
    kind: getattr(grpc.StatusCode, kind.value) for kind in ErrorKind
}
_REJECTION_CODES: Mapping[type[ExecutionRejected], grpc.StatusCode] = {
    CircuitOpenError: grpc.StatusCode.UNAVAILABLE,
    RateLimitedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BulkheadFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_for(
    exc: BaseException,
    metadata: Mapping[str, str] | None = None,
    trailers: tuple[tuple[str, str], ...] = (),
) -> grpc.Status:
    """Build the status answered for `exc`.

    Args:
        exc: what went wrong.
        metadata: joins the ErrorInfo metadata (for example the target).
        trailers: extra trailing metadata sent with the status (for example the request id).
    """
    status = _status_for(exc, dict(metadata or {}))
    if not trailers:
        return status
    return _Status(status.code, status.details, (*status.trailing_metadata, *trailers))


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _status_for(exc: BaseException, extra: dict[str, str]) -> grpc.Status:
    if isinstance(exc, SidecarError):
        extra.update(exc.metadata)
        field = exc.metadata.get("field") if exc.kind is ErrorKind.INVALID_ARGUMENT else None
        return _build(_CODES[exc.kind], exc.message, exc.reason, extra, exc.retry_after, field)
    if isinstance(exc, ExecutionRejected):
        code = _REJECTION_CODES.get(type(exc), grpc.StatusCode.UNAVAILABLE)
        return _build(code, str(exc), exc.reason, extra, exc.retry_after)
    if isinstance(exc, ExecutionTimeout):
        return _build(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "the upstream did not answer in time",
            exc.reason,
            extra,
            None,
        )
    return _build(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL", extra, None)


def _build(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: Mapping[str, str],
    retry_after: float | None,
    field: str | None = None,
) -> grpc.Status:
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))]
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(math.ceil(max(retry_after, 0.0) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.RetryInfo
    | error_details_pb2.BadRequest,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
