"""The mapping of botocore's exceptions to `sidecar.errors`: the table, row by row (the real
paths, against moto, are in test_aws_connection.py)."""

from __future__ import annotations

import pytest
from botocore import exceptions as bex

from sidecar.connections.aws import map_aws_error
from sidecar.connections.aws.errors import parse_retry_after
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SidecarError,
    Unavailable,
    UpstreamThrottled,
)


def client_error(
    code: str, status: int, *, headers: dict[str, str] | None = None, operation: str = "Op"
) -> bex.ClientError:
    response = {
        "Error": {"Code": code, "Message": f"message of {code}"},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "RequestId": "req-1",
            "HTTPHeaders": headers or {},
        },
    }
    return bex.ClientError(response, operation)  # type: ignore[arg-type]


CLIENT_ERRORS = [
    # (code, status) -> (kind, reason)
    ("NoSuchKey", 404, NotFound, "UPSTREAM_NOT_FOUND"),
    ("NoSuchBucket", 404, NotFound, "UPSTREAM_NOT_FOUND"),
    ("ResourceNotFoundException", 400, NotFound, "UPSTREAM_NOT_FOUND"),
    ("AWS.SimpleQueueService.NonExistentQueue", 400, NotFound, "UPSTREAM_NOT_FOUND"),
    ("404", 404, NotFound, "UPSTREAM_NOT_FOUND"),  # S3 HEAD: the status is the code
    ("SomethingMissing", 404, NotFound, "UPSTREAM_NOT_FOUND"),
    ("AccessDenied", 403, PermissionDenied, "UPSTREAM_AUTH_FAILED"),
    ("AccessDeniedException", 400, PermissionDenied, "UPSTREAM_AUTH_FAILED"),
    ("InvalidClientTokenId", 403, PermissionDenied, "UPSTREAM_AUTH_FAILED"),
    ("ConditionalCheckFailedException", 400, FailedPrecondition, "UPSTREAM_CONDITION_FAILED"),
    ("PreconditionFailed", 412, FailedPrecondition, "UPSTREAM_CONDITION_FAILED"),
    ("412", 412, FailedPrecondition, "UPSTREAM_CONDITION_FAILED"),
    ("Throttling", 400, UpstreamThrottled, "UPSTREAM_RATE_LIMITED"),
    ("ThrottlingException", 400, UpstreamThrottled, "UPSTREAM_RATE_LIMITED"),
    ("SlowDown", 503, UpstreamThrottled, "UPSTREAM_RATE_LIMITED"),
    ("RequestLimitExceeded", 503, UpstreamThrottled, "UPSTREAM_RATE_LIMITED"),
    ("TooManyRequestsException", 429, UpstreamThrottled, "UPSTREAM_RATE_LIMITED"),
    ("ProvisionedThroughputExceededException", 400, UpstreamThrottled, "UPSTREAM_RATE_LIMITED"),
    ("Whatever", 429, UpstreamThrottled, "UPSTREAM_RATE_LIMITED"),
    ("InternalError", 500, Unavailable, "UPSTREAM_UNAVAILABLE"),
    ("ServiceUnavailable", 503, Unavailable, "UPSTREAM_UNAVAILABLE"),
    ("", 502, Unavailable, "UPSTREAM_UNAVAILABLE"),
    ("InvalidParameterValue", 400, InvalidArgument, "UPSTREAM_REJECTED"),
    ("ValidationException", 400, InvalidArgument, "UPSTREAM_REJECTED"),
    ("MethodNotAllowed", 405, InvalidArgument, "UPSTREAM_REJECTED"),
    ("EntityTooLarge", 413, InvalidArgument, "UPSTREAM_REJECTED"),
]


@pytest.mark.parametrize(("code", "status", "kind", "reason"), CLIENT_ERRORS)
def test_client_errors_map_by_code_then_status(
    code: str, status: int, kind: type[SidecarError], reason: str
) -> None:
    mapped = map_aws_error(client_error(code, status, operation="GetObject"), "store")
    assert type(mapped) is kind
    assert mapped.reason == reason
    expected = {"target": "store", "http_status": str(status), "aws_operation": "GetObject"}
    expected["aws_request_id"] = "req-1"
    if code:
        expected["aws_error_code"] = code
    assert mapped.metadata == expected


def test_transience_follows_the_breaker_rule() -> None:
    """Throttling and 5xx count as upstream failures (transient); 4xx do not."""
    assert map_aws_error(client_error("InternalError", 500), "t").transient  # type: ignore[union-attr]
    assert not map_aws_error(client_error("NoSuchKey", 404), "t").transient  # type: ignore[union-attr]
    assert not map_aws_error(client_error("Bad", 400), "t").transient  # type: ignore[union-attr]


def test_a_throttle_keeps_the_retry_after_it_was_sent() -> None:
    error = client_error("SlowDown", 503, headers={"retry-after": "7"})
    mapped = map_aws_error(error, "t")
    assert isinstance(mapped, ResourceExhausted) and mapped.retry_after == 7.0
    assert map_aws_error(client_error("Throttling", 400), "t").retry_after is None  # type: ignore[union-attr]


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500.0) == 0.0
    assert parse_retry_after("99999") == 3600.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


URL = "http://127.0.0.1:1/"
CLIENT_FAILURES = [
    (bex.EndpointConnectionError(endpoint_url=URL), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (bex.ConnectTimeoutError(endpoint_url=URL), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (bex.ReadTimeoutError(endpoint_url=URL), DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (bex.SSLError(endpoint_url=URL, error="bad cert"), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (
        bex.ConnectionClosedError(endpoint_url=URL),
        Unavailable,
        "UPSTREAM_UNAVAILABLE",
    ),
    (bex.HTTPClientError(error="boom"), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (bex.ParamValidationError(report="Missing Bucket"), InvalidArgument, "INVALID_REQUEST"),
    (bex.NoCredentialsError(), FailedPrecondition, "UPSTREAM_AUTH_FAILED"),
    (
        bex.CredentialRetrievalError(provider="assume-role", error_msg="x"),
        FailedPrecondition,
        "UPSTREAM_AUTH_FAILED",
    ),
    (bex.NoRegionError(), Unavailable, "UPSTREAM_UNAVAILABLE"),
]


@pytest.mark.parametrize(("error", "kind", "reason"), CLIENT_FAILURES, ids=lambda v: str(v)[:30])
def test_client_side_failures_map_by_class(
    error: Exception, kind: type[SidecarError], reason: str
) -> None:
    mapped = map_aws_error(error, "acct")
    assert type(mapped) is kind
    assert (mapped.reason, mapped.metadata) == (reason, {"target": "acct"})
    assert "127.0.0.1" not in mapped.message  # the endpoint's address is not shown


def test_other_exceptions_are_not_aws_errors() -> None:
    assert map_aws_error(ValueError("x"), "t") is None
    assert map_aws_error(KeyError("x"), "t") is None
