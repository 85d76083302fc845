"""Upstream failures of AI providers as `sidecar.errors` types.

The HTTP mapping itself is the http connection's (`sidecar.connections.http.errors`: one
status means one gRPC code whoever answered it); this module gives it the AI wording:

- every error carries `metadata={"provider": ..., "upstream_status": ...}` for `ErrorInfo`;
- 404 means the model or route does not exist: NotFound with reason MODEL_NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sidecar.connections.http import errors as http_errors
from sidecar.connections.http.errors import (
    UPSTREAM_RATE_LIMITED,
    StatusMapper,
    error_message,
    parse_retry_after,
)
from sidecar.errors import DeadlineExceeded, SidecarError, Unavailable

__all__ = [
    "UPSTREAM_RATE_LIMITED",
    "connection_error",
    "error_message",
    "metadata_of",
    "parse_retry_after",
    "status_error",
    "status_mapper",
    "stream_interrupted",
    "upstream_timeout",
]

_NOT_FOUND: Final = ("has no such model or route", "MODEL_NOT_FOUND")


def metadata_of(provider: str) -> Mapping[str, str]:
    """What every error of `provider` carries besides `upstream_status`."""
    return {"provider": provider}


def status_error(
    provider: str,
    status: int,
    upstream_message: str = "",
    retry_after: float | None = None,
) -> SidecarError:
    """The sidecar error for an upstream HTTP status."""
    return http_errors.status_error(
        provider,
        status,
        upstream_message,
        retry_after,
        metadata=metadata_of(provider),
        not_found=_NOT_FOUND,
    )


def status_mapper(provider: str) -> StatusMapper:
    """The error of a non-2xx answer to a streamed request, for `open_stream(on_status=)`."""

    def mapped(status: int, body: bytes, headers: Mapping[str, str]) -> SidecarError:
        return status_error(provider, status, error_message(body), parse_retry_after(headers))

    return mapped


def connection_error(provider: str, detail: str) -> Unavailable:
    """The upstream could not be reached (connect refused, reset before the answer)."""
    return http_errors.connection_error(provider, detail, metadata=metadata_of(provider))


def upstream_timeout(provider: str, detail: str) -> DeadlineExceeded:
    """The upstream did not send the next bytes within the read or connect timeout."""
    return http_errors.upstream_timeout(provider, detail, metadata=metadata_of(provider))


def stream_interrupted(provider: str, detail: str, status: str = "200") -> Unavailable:
    """The upstream stream broke after it started (cut connection, no end, error event)."""
    return http_errors.stream_interrupted(provider, detail, status, metadata=metadata_of(provider))
