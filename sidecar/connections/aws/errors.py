"""botocore / aiobotocore failures as `sidecar.errors` types: one mapping for every user of an
aws connection (the connection's ping, and the object store, queue and generic AWS backends
to come), so an AWS answer means the same gRPC code whatever service gave it:

    connection refused, DNS, TLS    -> Unavailable         UPSTREAM_UNAVAILABLE
    connect timeout                 -> Unavailable         UPSTREAM_UNAVAILABLE
    read timeout                    -> DeadlineExceeded    DEADLINE_EXCEEDED
    connection closed mid-answer    -> Unavailable         UPSTREAM_UNAVAILABLE
    ClientError, by error code first, then by HTTP status:
      NoSuchKey, NoSuchBucket, NoSuchUpload, ResourceNotFoundException, NotFound,
      QueueDoesNotExist, 404        -> NotFound            UPSTREAM_NOT_FOUND
      AccessDenied, 401, 403        -> PermissionDenied    UPSTREAM_AUTH_FAILED
      ConditionalCheckFailedException, PreconditionFailed,
      412                           -> FailedPrecondition  UPSTREAM_CONDITION_FAILED
      Throttling, ThrottlingException, SlowDown, RequestLimitExceeded,
      TooManyRequestsException, ProvisionedThroughputExceededException,
      RequestThrottled, 429         -> UpstreamThrottled   UPSTREAM_RATE_LIMITED
                                                           (retry_after from Retry-After)
      5xx                           -> Unavailable         UPSTREAM_UNAVAILABLE
      any other 4xx                 -> InvalidArgument     UPSTREAM_REJECTED
    parameter validation (client side) -> InvalidArgument  INVALID_REQUEST
    no credentials, or fetching them failed
                                    -> FailedPrecondition  UPSTREAM_AUTH_FAILED

Every mapped error keeps `target` (the connection or service) in its ErrorInfo metadata,
and, for an answer from AWS, `aws_error_code`, `aws_operation`, `http_status` and
`aws_request_id` when AWS sent them. Throttling and 5xx are transient (the resilience
pipeline retries them and the breaker counts them); 4xx are the caller's or the config's
problem and are not.

botocore's exception classes are imported on first use only, so importing this module
costs nothing for a config without AWS.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any, Final

from sidecar.connections._mapped_errors import MappedErrors
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SidecarError,
    Unavailable,
    UpstreamThrottled,
)

__all__ = [
    "NOT_FOUND_CODES",
    "PRECONDITION_CODES",
    "THROTTLING_CODES",
    "AwsErrors",
    "aws_errors",
    "client_error",
    "map_aws_error",
    "parse_retry_after",
]

NOT_FOUND_CODES: Final = frozenset(
    {
        "NoSuchKey",
        "NoSuchBucket",
        "NoSuchUpload",
        "NoSuchVersion",
        "NotFound",
        "ResourceNotFoundException",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "NotFoundException",
    }
)
"""AWS error codes that mean "no such resource", whatever HTTP status came with them (SQS
answers 400 for a missing queue)."""

PERMISSION_CODES: Final = frozenset({"AccessDenied", "AccessDeniedException"})

PRECONDITION_CODES: Final = frozenset({"ConditionalCheckFailedException", "PreconditionFailed"})
"""Error codes of a condition set by the request that did not hold."""

THROTTLING_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "SlowDown",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
    }
)
"""Error codes of AWS asking the sidecar to slow down (botocore's own throttling list)."""

_MAX_MESSAGE: Final = 300
_MAX_RETRY_AFTER: Final = 3600.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if "," in value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)  # a date in the past: now


def client_error(
    *,
    code: str,
    status: int,
    message: str,
    metadata: Mapping[str, str],
    retry_after: float | None = None,
) -> SidecarError:
    """The sidecar error of an AWS error answer: its error `code` first, its HTTP `status`
    next (see the module's table). `metadata` is carried as is."""
    text = message[:_MAX_MESSAGE] if message else code or f"HTTP {status}"
    if code in THROTTLING_CODES or status == 429:
        return UpstreamThrottled(
            f"AWS throttled the call ({code or status}): {text}",
            reason="UPSTREAM_RATE_LIMITED",
            metadata=metadata,
            retry_after=retry_after,
        )
    if code in NOT_FOUND_CODES or status == 404:
        return NotFound(text, reason="UPSTREAM_NOT_FOUND", metadata=metadata)
    if code in PRECONDITION_CODES or status == 412:
        return FailedPrecondition(text, reason="UPSTREAM_CONDITION_FAILED", metadata=metadata)
    if code in PERMISSION_CODES or status in (401, 403):
        return PermissionDenied(
            f"AWS refused the sidecar's credentials ({code or status}): {text}",
            reason="UPSTREAM_AUTH_FAILED",
            metadata=metadata,
        )
    if status >= 500:
        return Unavailable(
            f"AWS failed transiently ({code or status}): {text}",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
            retry_after=retry_after,
        )
    return InvalidArgument(
        f"AWS rejected the request ({code or status}): {text}",
        reason="UPSTREAM_REJECTED",
        metadata=metadata,
    )


def _from_client_error(exc: Any, target: str) -> SidecarError:
    response: Mapping[str, Any] = exc.response or {}
    error: Mapping[str, Any] = response.get("Error") or {}
    meta: Mapping[str, Any] = response.get("ResponseMetadata") or {}
    headers: Mapping[str, Any] = meta.get("HTTPHeaders") or {}
    code = str(error.get("Code") or "")
    status_value = meta.get("HTTPStatusCode")
    try:
        status = int(status_value) if status_value is not None else int(code)
    except (TypeError, ValueError):  # S3 HEAD answers carry the status as the code
        status = 400
    metadata = {"target": target, "http_status": str(status)}
    if code:
        metadata["aws_error_code"] = code
    operation = getattr(exc, "operation_name", None)
    if operation:
        metadata["aws_operation"] = str(operation)
    request_id = meta.get("RequestId") or headers.get("x-amz-request-id")
    if request_id:
        metadata["aws_request_id"] = str(request_id)
    retry_after = parse_retry_after(headers.get("retry-after"))
    return client_error(
        code=code,
        status=status,
        message=str(error.get("Message") or ""),
        metadata=metadata,
        retry_after=retry_after,
    )


def map_aws_error(exc: BaseException, target: str) -> SidecarError | None:
    """The sidecar error for an exception raised by botocore or aiobotocore, or None if it
    is not one (see the module's table)."""
    from botocore import exceptions as bex

    metadata = {"target": target}
    if isinstance(exc, bex.ClientError):
        return _from_client_error(exc, target)
    if isinstance(exc, bex.ReadTimeoutError):
        return DeadlineExceeded(
            "AWS did not answer in time", reason="DEADLINE_EXCEEDED", metadata=metadata
        )
    if isinstance(exc, bex.ConnectTimeoutError):
        return Unavailable(
            "AWS could not be reached in time (connect timeout)",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
        )
    if isinstance(exc, bex.SSLError):
        return Unavailable(
            "the TLS handshake with AWS failed (certificate or name not trusted)",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
        )
    if isinstance(exc, bex.ConnectionError | bex.HTTPClientError):
        # The text may carry the endpoint's address: only the class name is shown.
        return Unavailable(
            f"AWS is unavailable ({type(exc).__name__})",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
        )
    if isinstance(exc, bex.ParamValidationError | bex.ValidationError):
        return InvalidArgument(
            f"invalid AWS request: {str(exc)[:_MAX_MESSAGE]}",
            reason="INVALID_REQUEST",
            metadata=metadata,
        )
    if isinstance(
        exc,
        bex.NoCredentialsError
        | bex.PartialCredentialsError
        | bex.CredentialRetrievalError
        | bex.RefreshWithMFAUnsupportedError,
    ):
        return FailedPrecondition(
            f"the AWS connection has no usable credentials ({type(exc).__name__})",
            reason="UPSTREAM_AUTH_FAILED",
            metadata=metadata,
        )
    if isinstance(exc, bex.BotoCoreError):
        return Unavailable(
            f"AWS client error ({type(exc).__name__})",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
        )
    return None


AwsErrors = MappedErrors
"""The context manager of `map_aws_error` (see `aws_errors`)."""


def aws_errors(target: str) -> AwsErrors:
    """The exception-mapping context manager for the connection or service `target`."""
    return MappedErrors(target, map_aws_error)
