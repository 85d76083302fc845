"""Shared test helpers: decoding rich error details, waiting for a condition, and locating
the grpcurl binary."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from sidecar.connections.redis import RedisConnection

ROOT = Path(__file__).resolve().parent.parent

RedisConnect = Callable[..., RedisConnection]
"""The `redis_connect` fixture: `connect(settings, name="cache", *, keepalive=1.0,
**client_options)` makes a `RedisConnection`, closed after the test."""


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status carried in the error's trailers."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no rich status in {error!r}")


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a failed call."""
    for detail in rich_status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo detail")


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """Seconds of the RetryInfo detail, or None when there is none."""
    for detail in rich_status(error).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Return once `condition()` holds or `seconds` have passed (the caller asserts): for
    effects the sidecar completes asynchronously, bounded generously for a loaded machine."""
    deadline = time.monotonic() + seconds
    for _ in iter(condition, True):
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.01)


def grpcurl_path() -> str:
    """The grpcurl binary `make install` puts in .tools/ (or one on PATH)."""
    local = ROOT / ".tools" / "grpcurl"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("grpcurl")
    if found is None:
        raise AssertionError("grpcurl not found: run `make install`")
    return found
