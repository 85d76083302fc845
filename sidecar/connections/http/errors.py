"""HTTP failures as `sidecar.errors` types: one mapping for every user of an http connection
(the AI providers, and the REST, GraphQL and webhook backends to come), so an HTTP status
means the same gRPC code whoever answered it:

    400, 413, 422 -> InvalidArgument     UPSTREAM_REJECTED  (the request itself is wrong)
    401, 403      -> FailedPrecondition  UPSTREAM_AUTH_FAILED (the sidecar's credentials
                                          are wrong, not the caller's)
    404           -> NotFound            UPSTREAM_NOT_FOUND (a caller may name its own reason)
    408, 504      -> DeadlineExceeded    DEADLINE_EXCEEDED
    429           -> ResourceExhausted   UPSTREAM_RATE_LIMITED, retry_after from Retry-After
    5xx, 529      -> Unavailable         UPSTREAM_UNAVAILABLE (Retry-After kept)
    no connection -> Unavailable         UPSTREAM_UNAVAILABLE (upstream_status: unreachable)
    timeout       -> DeadlineExceeded    DEADLINE_EXCEEDED (upstream_status: timeout)
    broken stream -> Unavailable         STREAM_INTERRUPTED

`upstream` names the other side in messages (a provider, a connection); `metadata` is what
`ErrorInfo` carries besides `upstream_status` (default `{"target": upstream}`).

This module imports no HTTP library at load time: users of the error types alone (the AI
router, for a service on the embedded echo provider) must not pay for one.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from sidecar.connections.http.sse import SSEError
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
    "StatusMapper",
    "connection_error",
    "error_message",
    "mapped_http_errors",
    "parse_retry_after",
    "status_error",
    "stream_interrupted",
    "upstream_timeout",
]

UPSTREAM_RATE_LIMITED: Final = "UPSTREAM_RATE_LIMITED"
_MAX_MESSAGE: Final = 500

StatusMapper = Callable[[int, bytes, Mapping[str, str]], SidecarError]
"""(status, error body, headers) -> the error a non-2xx answer raises."""


def _with_status(upstream: str, metadata: Mapping[str, str] | None, status: str) -> dict[str, str]:
    base = {"target": upstream} if metadata is None else dict(metadata)
    base["upstream_status"] = status
    return base


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


def error_message(data: bytes) -> str:
    """The human part of an error body: `{"error": {"message"}}` (OpenAI), `{"type":
    "error", "error": {"message"}}` (Anthropic), `{"error": "..."}` (TGI), `{"message"}`, or
    the raw text."""
    try:
        body: Any = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")
    while isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if isinstance(body, Mapping):
        return str(body.get("message") or body.get("error") or "")
    return str(body)


def status_error(
    upstream: str,
    status: int,
    upstream_message: str = "",
    retry_after: float | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
    not_found: tuple[str, str] = ("has no such resource", "UPSTREAM_NOT_FOUND"),
) -> SidecarError:
    """The sidecar error for an upstream HTTP status (>= 400).

    Args:
        not_found: What a 404 says after the upstream's name, and its reason.
    """
    details = _with_status(upstream, metadata, str(status))
    detail = upstream_message.strip()[:_MAX_MESSAGE]
    said = f": {detail}" if detail else ""
    if status in (401, 403):
        # The upstream's text may quote part of the key; say only what the operator must fix.
        return FailedPrecondition(
            f"{upstream} rejected the sidecar's credentials (HTTP {status})",
            reason="UPSTREAM_AUTH_FAILED",
            metadata=details,
        )
    if status == 404:
        what, reason = not_found
        return NotFound(f"{upstream} {what}{said}", reason=reason, metadata=details)
    if status in (408, 504):
        return DeadlineExceeded(
            f"{upstream} timed out (HTTP {status})", reason="DEADLINE_EXCEEDED", metadata=details
        )
    if status == 429:
        return ResourceExhausted(
            f"{upstream} is rate limiting the sidecar{said}",
            reason=UPSTREAM_RATE_LIMITED,
            metadata=details,
            retry_after=retry_after,
        )
    if status >= 500:
        return Unavailable(
            f"{upstream} failed (HTTP {status})",
            reason="UPSTREAM_UNAVAILABLE",
            metadata=details,
            retry_after=retry_after,
        )
    return InvalidArgument(
        f"{upstream} rejected the request (HTTP {status}){said}",
        reason="UPSTREAM_REJECTED",
        metadata=details,
    )


def connection_error(
    upstream: str, detail: str, *, metadata: Mapping[str, str] | None = None
) -> Unavailable:
    """The upstream could not be reached (connect refused, reset before the answer)."""
    return Unavailable(
        f"cannot reach {upstream}: {detail}",
        reason="UPSTREAM_UNAVAILABLE",
        metadata=_with_status(upstream, metadata, "unreachable"),
    )


def upstream_timeout(
    upstream: str, detail: str, *, metadata: Mapping[str, str] | None = None
) -> DeadlineExceeded:
    """The upstream did not send the next bytes within the read or connect timeout."""
    return DeadlineExceeded(
        f"{upstream} did not answer in time: {detail}",
        reason="DEADLINE_EXCEEDED",
        metadata=_with_status(upstream, metadata, "timeout"),
    )


def stream_interrupted(
    upstream: str, detail: str, status: str = "200", *, metadata: Mapping[str, str] | None = None
) -> Unavailable:
    """The upstream's answer broke after it started (cut connection, no end, error event)."""
    return Unavailable(
        f"the {upstream} stream broke off: {detail}",
        reason="STREAM_INTERRUPTED",
        metadata=_with_status(upstream, metadata, status),
    )


@contextlib.contextmanager
def mapped_http_errors(
    upstream: str, *, metadata: Mapping[str, str] | None = None, opening: bool = True
) -> Iterator[None]:
    """Re-raise `httpx2`'s exceptions (and a malformed event stream) as `sidecar.errors`.

    Args:
        opening: True while the request is sent and its head awaited (a transport failure
            means unreachable); False while a body is read (it means a broken stream).
    """
    import httpx2  # here, not at the top: see the module docstring

    try:
        yield
    except httpx2.TimeoutException as exc:
        raise upstream_timeout(upstream, type(exc).__name__, metadata=metadata) from exc
    except (httpx2.TransportError, ssl.SSLError) as exc:
        # A TLS alert read after the handshake (a refused client certificate) reaches us as
        # the ssl module's own error, not wrapped by httpx2.
        detail = str(exc)[:200] or type(exc).__name__
        if opening:
            raise connection_error(upstream, detail, metadata=metadata) from exc
        raise stream_interrupted(upstream, detail, metadata=metadata) from exc
    except (httpx2.StreamError, SSEError) as exc:
        detail = str(exc)[:200] or type(exc).__name__
        raise stream_interrupted(upstream, detail, metadata=metadata) from exc
