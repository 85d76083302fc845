"""Turn any exception that leaves a servicer into a gRPC status with `google.rpc.Status`
details: an `ErrorInfo` always, a `RetryInfo` when coming back later may succeed.

Domain errors and resilience rejections map to the code that says what happened; anything
else is a bug and answers INTERNAL with no internals in the message.

Messages and metadata may echo a caller's input (an unknown target, a value quoted by an SQL
error). Each text is cut to MAX_ECHO_LENGTH bytes and the ErrorInfo metadata to
MAX_METADATA_SIZE in all, so a status always fits gRPC's 8 KiB metadata limit: past it, the
client would see RESOURCE_EXHAUSTED instead of the real code.
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

__all__ = ["DOMAIN", "MAX_DETAILS_SIZE", "MAX_ECHO_LENGTH", "MAX_METADATA_SIZE", "status_for"]

DOMAIN = "integration.v1"
# The longest message, metadata key or value sent, in UTF-8 bytes (so also in characters).
MAX_ECHO_LENGTH = 256
# ErrorInfo metadata entries that would go past this many bytes in all are left out.
MAX_METADATA_SIZE = 2048
# What the bounds above add up to: the serialized google.rpc.Status never exceeds it.
MAX_DETAILS_SIZE = 4096
_ELLIPSIS = "…"
# Bytes a map entry costs on the wire beyond its key and value: tags and length prefixes.
_ENTRY_OVERHEAD = 9

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
        advised = exc.advised_retry_after
        return _build(_CODES[exc.kind], exc.message, exc.reason, extra, advised, field)
    if isinstance(exc, ExecutionRejected):
        # The nearest listed ancestor: a CoolingDownError is a RateLimitedError.
        code = next(
            (code for kind, code in _REJECTION_CODES.items() if isinstance(exc, kind)),
            grpc.StatusCode.UNAVAILABLE,
        )
        return _build(code, str(exc), exc.reason, extra, exc.retry_after)
    if isinstance(exc, ExecutionTimeout):
        return _build(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "the upstream did not answer in time",
            exc.reason,
            extra,
            None,
        )
    if isinstance(exc, NotImplementedError):  # what a generated servicer base raises
        return _build(
            grpc.StatusCode.UNIMPLEMENTED,
            "the method is not implemented",
            "UNSUPPORTED_OPERATION",
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
    message = _bounded(message)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=_fitted(metadata))
    details = [_pack(info)]
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=_bounded(field), description=message
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(math.ceil(max(retry_after, 0.0) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _bounded(text: str) -> str:
    """`text`, cut to at most MAX_ECHO_LENGTH UTF-8 bytes with an ellipsis marking the cut."""
    if len(text) <= MAX_ECHO_LENGTH // 4:  # short enough whatever the characters
        return text
    encoded = text.encode()
    if len(encoded) <= MAX_ECHO_LENGTH:
        return text
    room = MAX_ECHO_LENGTH - len(_ELLIPSIS.encode())
    return encoded[:room].decode(errors="ignore") + _ELLIPSIS


def _fitted(metadata: Mapping[str, str]) -> dict[str, str]:
    """`metadata` with bounded keys and values, keeping entries in order while they fit
    MAX_METADATA_SIZE."""
    fitted: dict[str, str] = {}
    size = 0
    for key, value in metadata.items():
        entry = (_bounded(key), _bounded(value))
        size += len(entry[0].encode()) + len(entry[1].encode()) + _ENTRY_OVERHEAD
        if size > MAX_METADATA_SIZE:
            break
        fitted[entry[0]] = entry[1]
    return fitted


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.RetryInfo
    | error_details_pb2.BadRequest,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
