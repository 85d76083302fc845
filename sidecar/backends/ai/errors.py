"""Upstream failures of AI providers as `sidecar.errors` types, one mapping for every provider.

Each provider module keeps its own context manager that recognises its SDK's exceptions;
they all end here, so an HTTP status means the same gRPC code whoever answered it:

    400, 413, 422 -> InvalidArgument     UPSTREAM_REJECTED  (the request itself is wrong)
    401, 403      -> FailedPrecondition  UPSTREAM_AUTH_FAILED (the sidecar's credentials
                                          are wrong, not the caller's)
    404           -> NotFound            MODEL_NOT_FOUND
    408, 504      -> DeadlineExceeded    DEADLINE_EXCEEDED
    429           -> ResourceExhausted   UPSTREAM_RATE_LIMITED, retry_after from Retry-After
    5xx, 529      -> Unavailable         UPSTREAM_UNAVAILABLE
    broken stream -> Unavailable         STREAM_INTERRUPTED

Every error carries `metadata={"provider": ..., "upstream_status": ...}` for `ErrorInfo`.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Final

from sidecar.backends.ai.sse import SSEError
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)

__all__ = [
    "UPSTREAM_RATE_LIMITED",
    "connection_error",
    "mapped_sdk_errors",
    "parse_retry_after",
    "status_error",
    "stream_interrupted",
    "upstream_timeout",
]

UPSTREAM_RATE_LIMITED: Final = "UPSTREAM_RATE_LIMITED"
_MAX_MESSAGE: Final = 500


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asked us to wait: `retry-after-ms`, or `retry-after` as seconds
    or an HTTP date; None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def status_error(
    provider: str,
    status: int,
    upstream_message: str = "",
    retry_after: float | None = None,
) -> SidecarError:
    """The sidecar error for an upstream HTTP status."""
    metadata = {"provider": provider, "upstream_status": str(status)}
    detail = upstream_message.strip()[:_MAX_MESSAGE]
    said = f": {detail}" if detail else ""
    if status in (401, 403):
        # The upstream's text may quote part of the key; say only what the operator must fix.
        return FailedPrecondition(
            f"{provider} rejected the sidecar's credentials (HTTP {status})",
            reason="UPSTREAM_AUTH_FAILED",
            metadata=metadata,
        )
    if status == 404:
        return NotFound(
            f"{provider} has no such model or route{said}",
            reason="MODEL_NOT_FOUND",
            metadata=metadata,
        )
    if status in (408, 504):
        return DeadlineExceeded(
            f"{provider} timed out (HTTP {status})", reason="DEADLINE_EXCEEDED", metadata=metadata
        )
    if status == 429:
        return ResourceExhausted(
            f"{provider} is rate limiting the sidecar{said}",
            reason=UPSTREAM_RATE_LIMITED,
            metadata=metadata,
            retry_after=retry_after,
        )
    if status >= 500:
        return Unavailable(
            f"{provider} failed (HTTP {status})",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=metadata,
            retry_after=retry_after,
        )
    return InvalidArgument(
        f"{provider} rejected the request (HTTP {status}){said}",
        reason="UPSTREAM_REJECTED",
        metadata=metadata,
    )


def connection_error(provider: str, detail: str) -> Unavailable:
    """The upstream could not be reached (connect refused, reset before the answer)."""
    return Unavailable(
        f"cannot reach {provider}: {detail}",
        reason="UPSTREAM_UNAVAILABLE",
        metadata={"provider": provider, "upstream_status": "unreachable"},
    )


def upstream_timeout(provider: str, detail: str) -> DeadlineExceeded:
    """The upstream did not send the next bytes within the read or connect timeout."""
    return DeadlineExceeded(
        f"{provider} did not answer in time: {detail}",
        reason="DEADLINE_EXCEEDED",
        metadata={"provider": provider, "upstream_status": "timeout"},
    )


def stream_interrupted(provider: str, detail: str, status: str = "200") -> Unavailable:
    """The upstream stream broke after it started (cut connection, no end, error event)."""
    return Unavailable(
        f"the {provider} stream broke off: {detail}",
        reason="STREAM_INTERRUPTED",
        metadata={"provider": provider, "upstream_status": status},
    )


@contextlib.contextmanager
def mapped_sdk_errors(sdk: ModuleType, provider: str) -> Iterator[None]:
    """Re-raise an SDK's and httpx2's exceptions as `sidecar.errors` types.

    The `openai` and `anthropic` SDKs are generated from one template and share their
    exception classes' names, so one mapping serves both (`sdk` is the imported module).
    """
    import httpx2  # here, not at the top: the echo provider must not import an HTTP stack

    try:
        yield
    except sdk.APIStatusError as exc:
        raise status_error(
            provider,
            exc.status_code,
            _body_message(exc.body),
            parse_retry_after(exc.response.headers),
        ) from exc
    except (sdk.APITimeoutError, httpx2.TimeoutException) as exc:
        raise upstream_timeout(provider, type(exc).__name__) from exc
    except sdk.APIConnectionError as exc:
        raise connection_error(provider, str(exc.__cause__ or exc)[:200]) from exc
    except (httpx2.TransportError, httpx2.StreamError, SSEError) as exc:
        raise stream_interrupted(provider, str(exc)[:200] or type(exc).__name__) from exc


def _body_message(body: object) -> str:
    """The message of an error body, `{"error": {"message": ...}}` nested or not."""
    while isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if isinstance(body, Mapping):
        return str(body.get("message") or "")
    return str(body or "")
