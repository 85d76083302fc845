"""ObjectStoreService: validates requests, picks the objectstore integration by target, and
runs the `ObjectStoreBackend` through the target's resilience pipeline. No store knowledge
lives here.

- Every bound (keys, metadata, ranges, page sizes, chunk sizes, expiry) is checked before the
  pipeline, so a caller's bad input answers INVALID_ARGUMENT and never trips a breaker.
- PutObject streams the caller's chunks into the backend through an `UploadBody` that pulls
  one request message per chunk the backend asks for: nothing is read ahead, so a slow store
  slows the caller (gRPC flow control). It is never retried, not even with an
  idempotency key: the body is consumed as it goes.
- GetObject opens the object through the pipeline (retried when transient), then streams
  outside it with `context.write`, one chunk at a time, so flow control holds the store's
  reads while the caller does not read. A whole object with a recorded SHA-256 is hashed as
  it streams and the call ends with DATA_LOSS (CHECKSUM_MISMATCH) if the bytes differ; the
  open stream or file is released in `finally` whatever ends the call.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any, Final

from google.protobuf import duration_pb2, timestamp_pb2

from generated.integration.v1 import objectstore_pb2, objectstore_pb2_grpc
from sidecar.backends.objectstore import (
    MAX_DELETE_KEYS,
    PRESIGN,
    ByteRange,
    GetOptions,
    ObjectDownload,
    ObjectInfo,
    PresignMethod,
    PutOptions,
    UploadBody,
    check_key,
    check_metadata,
    check_sha256,
)
from sidecar.errors import Aborted, DataLoss, FailedPrecondition
from sidecar.resilience import Clock, ExecutionTimeout, run_with_timeout
from sidecar.runtime import Integration, Integrations
from sidecar.servicers._common import Context, call_deadline, call_through, invalid, resolve
from sidecar.servicers._read_ahead import read_ahead

__all__ = ["ObjectStoreServicer"]

MAX_CHUNK_BYTES: Final = 2 * 1024 * 1024
"""Largest PutObject data message."""
_MAX_CONTENT_TYPE: Final = 256
_MAX_ETAG: Final = 256
_MAX_DELIMITER_BYTES: Final = 32
_MAX_PAGE_SIZE: Final = 1000
_MAX_PAGE_TOKEN: Final = 4096
_MIN_EXPIRY: Final = 1.0
_MAX_EXPIRY: Final = 7 * 24 * 3600.0
_OCTET_STREAM: Final = "application/octet-stream"
_FIRST_MESSAGE_WAIT: Final = 30.0
"""How long PutObject waits for its header (the target, hence its idle timeout, is in it)."""
_METHODS: Final[Mapping[int, PresignMethod]] = {
    objectstore_pb2.PRESIGN_METHOD_GET: "GET",
    objectstore_pb2.PRESIGN_METHOD_PUT: "PUT",
}


class ObjectStoreServicer(objectstore_pb2_grpc.ObjectStoreServiceServicer):
    """Serve ObjectStoreService over the configured objectstore integrations."""

    def __init__(self, integrations: Integrations) -> None:
        self._integrations = integrations

    def _target(self, target: str) -> Integration[Any]:
        return resolve(self._integrations, "objectstore", target)

    async def PutObject(
        self,
        request_iterator: AsyncIterator[objectstore_pb2.PutObjectRequest],
        context: Context,
    ) -> objectstore_pb2.PutObjectResponse:
        try:
            first = await run_with_timeout(
                lambda: anext(aiter(request_iterator), None),
                _FIRST_MESSAGE_WAIT,
                self._integrations.clock,
                caller_deadline=False,
            )
        except ExecutionTimeout:
            raise _idle(_FIRST_MESSAGE_WAIT, "the caller sent no header") from None
        if first is None or not first.HasField("header"):
            raise invalid("header", "the first message must carry the header")
        store = self._target(first.target)
        header = first.header
        key = check_key(header.key)
        options = PutOptions(
            content_type=_content_type(header.content_type) or _OCTET_STREAM,
            metadata=check_metadata(header.metadata),
        )
        idle: float = store.settings.stream_idle_timeout
        body = UploadBody(
            _data(request_iterator, context, idle, self._integrations.clock),
            declared_sha256=check_sha256(header.sha256),
            max_object_size=store.settings.max_object_size,
        )
        pipeline = store.pipeline
        assert pipeline is not None
        # Not call_through: an idempotency key must not make a consumed body be retried.
        info = await pipeline.execute(
            lambda: store.backend.put(key, body, options),
            deadline=call_deadline(context, pipeline.clock),
            idempotent=False,
            transfer=True,  # as long as the caller streams: its deadline and idle timeout
        )
        return objectstore_pb2.PutObjectResponse(info=_info(info))

    async def GetObject(  # type: ignore[override]  # write-style streaming handler
        self, request: objectstore_pb2.GetObjectRequest, context: Context
    ) -> None:
        store = self._target(request.target)
        key = check_key(request.key)
        options = GetOptions(range=_range(request), if_match=_etag(request.if_match))
        stack = AsyncExitStack()

        async def open_object() -> ObjectDownload:
            download: ObjectDownload = await stack.enter_async_context(
                store.backend.get(key, options)
            )
            return download

        async with stack:
            download = await call_through(store, context, open_object)
            info = download.info
            head = objectstore_pb2.GetObjectHead(
                info=_info(info), range_start=download.start, range_length=download.length
            )
            idle: float = store.settings.stream_idle_timeout
            await self._write(context, objectstore_pb2.GetObjectResponse(head=head), idle)
            whole = download.start == 0 and download.length == info.size
            digest = hashlib.sha256() if whole and info.sha256 else None
            sent = 0
            async for chunk in read_ahead(download.chunks()):
                if digest is not None:
                    digest.update(chunk)  # ~0.5 ms per MiB, a chunk at a time
                sent += len(chunk)
                await self._write(context, objectstore_pb2.GetObjectResponse(data=chunk), idle)
            if sent != download.length or (
                digest is not None and digest.hexdigest() != info.sha256
            ):
                raise DataLoss(
                    f"object {key[:200]!r} read back does not match its recorded sha256 "
                    f"({sent} of {download.length} bytes): the stored copy is damaged",
                    reason="CHECKSUM_MISMATCH",
                    metadata={"key": key[:200], "sha256": info.sha256},
                )

    async def _write(
        self, context: Context, message: objectstore_pb2.GetObjectResponse, idle_timeout: float
    ) -> None:
        """Send one message, waiting at most `idle_timeout` for the reader to take it."""
        try:
            await run_with_timeout(
                lambda: context.write(message),
                idle_timeout,
                self._integrations.clock,
                caller_deadline=False,
            )
        except ExecutionTimeout:
            raise _idle(idle_timeout, "the reader took no message") from None

    async def HeadObject(
        self, request: objectstore_pb2.HeadObjectRequest, context: Context
    ) -> objectstore_pb2.HeadObjectResponse:
        store = self._target(request.target)
        key = check_key(request.key)
        info = await call_through(store, context, lambda: store.backend.head(key))
        return objectstore_pb2.HeadObjectResponse(info=_info(info))

    async def ListObjects(
        self, request: objectstore_pb2.ListObjectsRequest, context: Context
    ) -> objectstore_pb2.ListObjectsResponse:
        store = self._target(request.target)
        prefix = check_key(request.prefix, "prefix") if request.prefix else ""
        delimiter = request.delimiter
        if delimiter:
            check_key(delimiter, "delimiter")
            if len(delimiter.encode()) > _MAX_DELIMITER_BYTES:
                raise invalid("delimiter", f"must be at most {_MAX_DELIMITER_BYTES} bytes")
        if not 0 <= request.page_size <= _MAX_PAGE_SIZE:
            raise invalid("page_size", f"must be between 0 and {_MAX_PAGE_SIZE}")
        limit: int = store.settings.max_keys_per_page
        page_size = min(request.page_size or limit, limit)
        token = request.page_token
        if len(token) > _MAX_PAGE_TOKEN:
            raise invalid("page_token", f"must be at most {_MAX_PAGE_TOKEN} characters")
        page = await call_through(
            store, context, lambda: store.backend.list(prefix, delimiter, page_size, token)
        )
        return objectstore_pb2.ListObjectsResponse(
            objects=[_info(info) for info in page.objects],
            common_prefixes=page.common_prefixes,
            next_page_token=page.next_page_token,
        )

    async def DeleteObjects(
        self, request: objectstore_pb2.DeleteObjectsRequest, context: Context
    ) -> objectstore_pb2.DeleteObjectsResponse:
        store = self._target(request.target)
        if not 1 <= len(request.keys) <= MAX_DELETE_KEYS:
            raise invalid("keys", f"must hold 1 to {MAX_DELETE_KEYS} keys")
        keys = [check_key(key, f"keys[{i}]") for i, key in enumerate(request.keys)]
        failures = await call_through(store, context, lambda: store.backend.delete(keys))
        return objectstore_pb2.DeleteObjectsResponse(
            failures=[
                objectstore_pb2.ObjectDeleteFailure(key=f.key, code=f.code, message=f.message)
                for f in failures
            ]
        )

    async def CopyObject(
        self, request: objectstore_pb2.CopyObjectRequest, context: Context
    ) -> objectstore_pb2.CopyObjectResponse:
        store = self._target(request.target)
        source = check_key(request.source_key, "source_key")
        destination = check_key(request.destination_key, "destination_key")
        info = await call_through(store, context, lambda: store.backend.copy(source, destination))
        return objectstore_pb2.CopyObjectResponse(info=_info(info))

    async def PresignUrl(
        self, request: objectstore_pb2.PresignUrlRequest, context: Context
    ) -> objectstore_pb2.PresignUrlResponse:
        store = self._target(request.target)
        key = check_key(request.key)
        method = _METHODS.get(request.method)
        if method is None:
            raise invalid("method", "must be PRESIGN_METHOD_GET or PRESIGN_METHOD_PUT")
        content_type = _content_type(request.content_type)
        if content_type and method != "PUT":
            raise invalid("content_type", "is signed for PUT only")
        longest = min(_MAX_EXPIRY, float(store.settings.presign_max_expiry))
        expires_in = _expiry(request, longest)
        if PRESIGN not in store.features:
            raise FailedPrecondition(
                f"target {store.name!r} ({store.backend_name}) cannot presign URLs",
                reason="UNSUPPORTED_OPERATION",
                metadata={"target": store.name},
            )
        url = await call_through(
            store,
            context,
            lambda: store.backend.presign(key, method, expires_in, content_type),
        )
        expires_at = timestamp_pb2.Timestamp()
        expires_at.FromNanoseconds(int((time.time() + expires_in) * 1e9))
        return objectstore_pb2.PresignUrlResponse(url=url, expires_at=expires_at)


async def _data(
    requests: AsyncIterator[objectstore_pb2.PutObjectRequest],
    context: Context,
    idle_timeout: float,
    clock: Clock,
) -> AsyncIterator[bytes]:
    """The data chunks of a PutObject stream after its header, one message at a time, each
    awaited at most `idle_timeout` (then ABORTED, STREAM_IDLE_TIMEOUT).

    grpc.aio ends the request stream quietly when the call is cancelled or its deadline
    passes; that end is not the caller's last message, so it raises instead of letting a
    truncated object be stored."""
    iterator = aiter(requests)
    while True:
        try:
            message = await run_with_timeout(
                lambda: anext(iterator, None), idle_timeout, clock, caller_deadline=False
            )
        except ExecutionTimeout:
            raise _idle(idle_timeout, "the caller sent no message") from None
        if message is None:
            break
        if message.HasField("header"):
            raise invalid("header", "only the first message may carry the header")
        chunk = message.data
        if len(chunk) > MAX_CHUNK_BYTES:
            raise invalid(
                "data", f"is {len(chunk)} bytes; the limit is {MAX_CHUNK_BYTES}", "VALUE_TOO_LARGE"
            )
        if chunk:
            yield chunk
    remaining = context.time_remaining()
    if context.cancelled() or (remaining is not None and remaining <= 0):
        raise Aborted(
            "the upload was cut off (cancelled, or past its deadline) before its last "
            "message; nothing was stored",
            reason="STREAM_INTERRUPTED",
        )


def _idle(idle_timeout: float, what: str) -> Aborted:
    return Aborted(
        f"{what} for {idle_timeout:g}s: the stream ended (an upload stores nothing)",
        reason="STREAM_IDLE_TIMEOUT",
        metadata={"idle_timeout_seconds": f"{idle_timeout:g}"},
    )


def _content_type(value: str) -> str:
    if len(value) > _MAX_CONTENT_TYPE or any(not (0x20 <= ord(c) < 0x7F) for c in value):
        raise invalid(
            "content_type", f"must be at most {_MAX_CONTENT_TYPE} printable ASCII characters"
        )
    return value


def _etag(value: str) -> str | None:
    if not value:
        return None
    if len(value) > _MAX_ETAG:
        raise invalid("if_match", f"must be at most {_MAX_ETAG} characters")
    stripped = value.strip()
    if stripped.startswith("W/"):
        stripped = stripped[2:]
    return stripped.strip('"') or None


def _range(request: objectstore_pb2.GetObjectRequest) -> ByteRange | None:
    if not request.HasField("range"):
        return None
    start = request.range.start
    if start < 0:
        raise invalid("range.start", "must not be negative")
    if not request.range.HasField("end"):
        return ByteRange(start, None)
    end = request.range.end
    if end < start:
        raise invalid("range.end", "must be at least range.start")
    return ByteRange(start, end)


def _expiry(request: objectstore_pb2.PresignUrlRequest, longest: float) -> float:
    if not request.HasField("expires_in"):
        raise invalid("expires_in", "must be set")
    duration: duration_pb2.Duration = request.expires_in
    seconds = duration.seconds + duration.nanos / 1e9
    if not _MIN_EXPIRY <= seconds <= longest:
        raise invalid("expires_in", f"must be between {_MIN_EXPIRY:g}s and {longest:g}s")
    return seconds


def _info(info: ObjectInfo) -> objectstore_pb2.ObjectInfo:
    modified = timestamp_pb2.Timestamp()
    modified.FromNanoseconds(int(info.last_modified * 1e9))
    return objectstore_pb2.ObjectInfo(
        key=info.key,
        size=info.size,
        etag=info.etag,
        last_modified=modified,
        content_type=info.content_type,
        metadata=dict(info.metadata),
        sha256=info.sha256,
    )
