"""`S3Backend`: the object-store capability on Amazon S3, or on any S3-compatible store
(MinIO, Ceph, moto) at the aws connection's `endpoint_url`.

It uses the one S3 client of its aws connection (`await connection.client("s3")`), shared
with every other service on that connection, and one bucket per service.

- **Put**: an object of at most `part_size` bytes is one PutObject, sent once the caller's
  stream has ended (so it is buffered, at most `part_size` plus one incoming chunk). A larger
  one is a multipart upload (see `_s3_multipart`): parts of `part_size` bytes, at most
  `max_concurrent_parts` of them in flight, and the caller's stream is not read further while
  every slot is busy, so one upload holds at most (`max_concurrent_parts` + 1) x `part_size`
  bytes. On any failure, cancellation or deadline, the multipart upload is aborted (shielded
  from the cancellation, with its own short timeout) before the error is re-raised, so no
  unfinished upload (which S3 bills as stored bytes) stays behind.
- **Checksum**: the caller's bytes are hashed as they pass (`UploadBody`); a SHA-256 the
  caller declared is checked (`body.verify()`) before the object becomes visible (before the
  single PutObject, before CompleteMultipartUpload). The object's SHA-256 is recorded in its
  user metadata entry `sha256`: the computed one for a single PutObject, the declared one for
  a multipart upload (its metadata is fixed at CreateMultipartUpload, before any byte is
  read), none for a multipart upload without a declared checksum. A put answers the SHA-256
  it computed (and verified) either way, its ETag, and S3's Date header as `last_modified`
  (to the second, saving a HeadObject).
- **Get**: GetObject (with Range and If-Match), streamed from the response body chunk by
  chunk as the caller reads; leaving the context closes the body, so an abandoned download
  gives its pooled connection back (closed) instead of leaking it. A range starting at or
  past the end (S3's 416 InvalidRange) is INVALID_ARGUMENT (INVALID_REQUEST, field `range`),
  as on every backend.
- **List**: ListObjectsV2; S3's continuation token travels inside the sidecar's page token
  (`paging`), bound to the listing's prefix and delimiter, so a token of another listing is
  refused before S3 sees it.
- **Copy**: CopyObject with MetadataDirective COPY (server side: content type, metadata
  and the `sha256` entry go along), then a HeadObject of the copy for its info. S3 copies at
  most 5 GiB in one CopyObject; a larger source is refused by S3 (INVALID_ARGUMENT).
- **Presign**: `generate_presigned_url` of the shared client (a PUT signs its Content-Type).
- **Errors**: botocore's exceptions become `sidecar.errors` through the aws mapping
  (`sidecar.connections.aws.errors`, with the service's name as `target`): NoSuchKey /
  NoSuchBucket -> NOT_FOUND, PreconditionFailed -> FAILED_PRECONDITION, SlowDown and the
  other throttling codes -> RESOURCE_EXHAUSTED, 5xx -> UNAVAILABLE, with `aws_error_code` in
  the ErrorInfo.

Usage:

    store = S3Backend(connection, name="files", bucket="my-bucket")
    info = await store.put("a/b.txt", body, PutOptions(content_type="text/plain"))
    async with store.get("a/b.txt", GetOptions()) as download:
        async for chunk in download.chunks():
            ...
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from sidecar.backends.objectstore._s3_multipart import MultipartUpload, PartReader
from sidecar.backends.objectstore._s3_part import MappedPart
from sidecar.backends.objectstore.base import (
    MAX_DELETE_KEYS,
    PRESIGN,
    SHA256_METADATA_KEY,
    ByteRange,
    DeleteFailure,
    GetOptions,
    ObjectInfo,
    ObjectPage,
    PresignMethod,
    PutOptions,
    UploadBody,
)
from sidecar.backends.objectstore.paging import decode_page_token, encode_page_token
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config.services.objectstore import ObjectStoreServiceConfig
from sidecar.connections.aws import AwsConnection, AwsErrors, aws_errors
from sidecar.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import GetObjectOutputTypeDef, HeadObjectOutputTypeDef

__all__ = ["SPEC", "S3Backend"]

MAX_PRESIGN_SECONDS: Final = 7 * 24 * 3600
"""SigV4 presigned URLs are valid for at most 7 days."""

_CLOSE_WAIT: Final = 15.0
"""How long `close()` waits for multipart aborts still under way."""


class S3Backend:
    """An `ObjectStoreBackend` on one S3 bucket.

    Args:
        connection: the aws connection the service names (its S3 client is shared; the
            connection is closed by its owner, after this backend).
        name: the service's name, `target` in errors.
        bucket: the bucket every key lives in.
        part_size: bytes per multipart part, and the largest object sent as one PutObject.
        max_concurrent_parts: parts of one upload in flight at once.
        chunk_size: the largest chunk a download yields.
    """

    def __init__(
        self,
        connection: AwsConnection,
        *,
        name: str,
        bucket: str,
        part_size: int = 8 * 1024 * 1024,
        max_concurrent_parts: int = 2,
        chunk_size: int = 256 * 1024,
    ) -> None:
        self._connection = connection
        self._name = name
        self._bucket = bucket
        self._part_size = part_size
        self._max_concurrent_parts = max_concurrent_parts
        self._chunk_size = chunk_size
        self._errors: AwsErrors = aws_errors(name)
        self._aborts: set[asyncio.Task[None]] = set()
        """Multipart aborts under way (strong references: they outlive a cancelled put)."""
        self._closed = False

    @property
    def bucket(self) -> str:
        return self._bucket

    # -- writes ------------------------------------------------------------------------------

    async def put(self, key: str, body: UploadBody, options: PutOptions) -> ObjectInfo:
        client = await self._client()
        reader = PartReader(aiter(body))
        first = await reader.read_part(self._part_size)
        try:
            single = not await reader.more()  # the whole object fits in one part
        except BaseException:
            first.close()
            raise
        if single:
            return await self._put_single(client, key, first, body, options)
        upload = MultipartUpload(
            client,
            errors=self._errors,
            bucket=self._bucket,
            key=key,
            part_size=self._part_size,
            max_concurrent=self._max_concurrent_parts,
            on_abort=self._track_abort,
        )
        metadata = _user_metadata(options.metadata, body.declared_sha256)
        response = await upload.run(first, reader, body, options.content_type, metadata)
        return ObjectInfo(
            key=key,
            size=body.size(),
            etag=_etag(response.get("ETag")),
            last_modified=_response_time(response),
            content_type=options.content_type,
            metadata=dict(options.metadata),
            sha256=body.sha256(),  # verified; recorded only when it was declared
        )

    async def _put_single(
        self,
        client: S3Client,
        key: str,
        data: MappedPart,
        body: UploadBody,
        options: PutOptions,
    ) -> ObjectInfo:
        try:
            body.verify()  # before the object exists: a mismatch leaves nothing behind
            sha256 = body.sha256()
            with self._errors:
                response = await client.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=data,
                    ContentType=options.content_type,
                    Metadata=_user_metadata(options.metadata, sha256),
                )
        finally:
            data.close()
        return ObjectInfo(
            key=key,
            size=body.size(),
            etag=_etag(response.get("ETag")),
            last_modified=_response_time(response),
            content_type=options.content_type,
            metadata=dict(options.metadata),
            sha256=sha256,
        )

    def _track_abort(self, task: asyncio.Task[None]) -> None:
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def delete(self, keys: Sequence[str]) -> Sequence[DeleteFailure]:
        if len(keys) > MAX_DELETE_KEYS:
            raise InvalidArgument(
                f"{len(keys)} keys; the limit is {MAX_DELETE_KEYS}",
                reason="INVALID_REQUEST",
                metadata={"field": "keys"},
            )
        if not keys:
            return ()
        client = await self._client()
        with self._errors:
            response = await client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            )
        return tuple(
            DeleteFailure(
                key=error.get("Key", ""),
                code=error.get("Code", ""),
                message=error.get("Message", ""),
            )
            for error in response.get("Errors", ())
        )

    async def copy(self, source_key: str, destination_key: str) -> ObjectInfo:
        client = await self._client()
        with self._errors:
            await client.copy_object(
                Bucket=self._bucket,
                Key=destination_key,
                CopySource={"Bucket": self._bucket, "Key": source_key},
                MetadataDirective="COPY",
            )
        # CopyObject answers only the ETag and date: the copy's own head gives the rest.
        return await self.head(destination_key)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str, options: GetOptions) -> _S3Get:
        return _S3Get(self, key, options)

    async def head(self, key: str) -> ObjectInfo:
        client = await self._client()
        with self._errors:
            response = await client.head_object(Bucket=self._bucket, Key=key)
        return _object_info(key, response)

    async def list(
        self, prefix: str, delimiter: str, page_size: int, page_token: str
    ) -> ObjectPage:
        client = await self._client()
        arguments: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix, "MaxKeys": page_size}
        if delimiter:
            arguments["Delimiter"] = delimiter
        continuation = decode_page_token(page_token, prefix, delimiter)
        if continuation:
            arguments["ContinuationToken"] = continuation
        with self._errors:
            response = await client.list_objects_v2(**arguments)
        objects = tuple(
            ObjectInfo(
                key=item.get("Key", ""),
                size=item.get("Size", 0),
                etag=_etag(item.get("ETag")),
                last_modified=item["LastModified"].timestamp() if "LastModified" in item else 0.0,
                content_type="",
                metadata={},
                sha256="",
            )
            for item in response.get("Contents", ())
        )
        prefixes = tuple(p["Prefix"] for p in response.get("CommonPrefixes", ()) if "Prefix" in p)
        token = response.get("NextContinuationToken", "") if response.get("IsTruncated") else ""
        return ObjectPage(
            objects=objects,
            common_prefixes=prefixes,
            next_page_token=encode_page_token(token, prefix, delimiter),
        )

    async def presign(
        self, key: str, method: PresignMethod, expires_in: float, content_type: str
    ) -> str:
        if not 0 < expires_in <= MAX_PRESIGN_SECONDS:
            raise InvalidArgument(
                f"expires_in must be within (0, {MAX_PRESIGN_SECONDS}] seconds (7 days)",
                reason="INVALID_REQUEST",
                metadata={"target": self._name, "field": "expires_in"},
            )
        client = await self._client()
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if method == "PUT" and content_type:
            params["ContentType"] = content_type
        operation = "get_object" if method == "GET" else "put_object"
        with self._errors:
            url: str = await client.generate_presigned_url(
                operation, Params=params, ExpiresIn=math.ceil(expires_in)
            )
        return url

    async def ping(self) -> None:
        """HeadBucket: the bucket exists and the credentials may use it."""
        client = await self._client()
        with self._errors:
            await client.head_bucket(Bucket=self._bucket)

    async def close(self) -> None:
        """Wait (a bounded time) for multipart aborts still under way; the client and the
        connection belong to the connection's owner."""
        self._closed = True
        if self._aborts:
            await asyncio.wait(set(self._aborts), timeout=_CLOSE_WAIT)

    # -- helpers -----------------------------------------------------------------------------

    async def _client(self) -> S3Client:
        if self._closed:
            raise Unavailable(
                f"the object store {self._name!r} is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )
        return cast("S3Client", await self._connection.client("s3"))

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    @property
    def errors(self) -> AwsErrors:
        return self._errors


class _Body(Protocol):
    """What this module uses of aiobotocore's response body (its stubs lack `close`)."""

    async def read(self, amt: int | None = None) -> bytes: ...

    def close(self) -> None: ...


class _S3Download:
    """One GetObject answer: `chunks()` reads its body as the caller pulls."""

    __slots__ = ("_body", "_chunk_size", "_errors", "info", "length", "start")

    def __init__(
        self,
        info: ObjectInfo,
        start: int,
        length: int,
        body: _Body,
        chunk_size: int,
        errors: AwsErrors,
    ) -> None:
        self.info = info
        self.start = start
        self.length = length
        self._body = body
        self._chunk_size = chunk_size
        self._errors = errors

    async def chunks(self) -> AsyncIterator[bytes]:
        body, size, errors = self._body, self._chunk_size, self._errors
        while True:
            with errors:
                chunk: bytes = await body.read(size)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        """Release the HTTP response (closed, unless it was read to its end and already went
        back to the pool)."""
        self._body.close()


class _S3Get:
    """The context of one download: GetObject on entry, the body closed on exit."""

    __slots__ = ("_download", "_key", "_options", "_store")

    def __init__(self, store: S3Backend, key: str, options: GetOptions) -> None:
        self._store = store
        self._key = key
        self._options = options
        self._download: _S3Download | None = None

    async def __aenter__(self) -> _S3Download:
        store, options = self._store, self._options
        client = await store._client()
        arguments: dict[str, Any] = {"Bucket": store.bucket, "Key": self._key}
        if options.range is not None:
            arguments["Range"] = _range_header(options.range)
        if options.if_match is not None:
            arguments["IfMatch"] = _quoted(options.if_match)
        try:
            with store.errors:
                response = await client.get_object(**arguments)
        except InvalidArgument as error:
            if error.metadata.get("aws_error_code") != "InvalidRange":
                raise
            # What every backend answers for a range starting at or past the end.
            raise InvalidArgument(
                f"range starts at or past the end of object {self._key[:200]!r}",
                reason="INVALID_REQUEST",
                metadata={"field": "range", "key": self._key[:200]},
            ) from error
        body = cast("_Body", response["Body"])
        try:
            info, start = _download_info(self._key, response)
        except BaseException:
            body.close()
            raise
        self._download = _S3Download(
            info, start, response.get("ContentLength", 0), body, store.chunk_size, store.errors
        )
        return self._download

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._download is not None:
            self._download.close()
            self._download = None


# -- conversions ---------------------------------------------------------------------------


def _user_metadata(metadata: Mapping[str, str], sha256: str | None) -> dict[str, str]:
    """The caller's metadata, plus the checksum entry (which wins over a caller's)."""
    merged = {k: v for k, v in metadata.items() if k.lower() != SHA256_METADATA_KEY}
    if sha256:
        merged[SHA256_METADATA_KEY] = sha256
    return merged


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _quoted(etag: str) -> str:
    """An ETag as S3 wants it in If-Match: in quotes (callers may give it with or without)."""
    return f'"{etag.strip(chr(34))}"'


def _range_header(byte_range: ByteRange) -> str:
    end = "" if byte_range.end is None else str(byte_range.end)
    return f"bytes={byte_range.start}-{end}"


def _response_time(response: Mapping[str, Any]) -> float:
    """When S3 answered (its Date header): what Last-Modified of a new object says, to the
    second, without a HeadObject."""
    import email.utils
    import time

    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    date = headers.get("date")
    if date:
        try:
            return email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()


def _object_info(
    key: str, response: HeadObjectOutputTypeDef | GetObjectOutputTypeDef
) -> ObjectInfo:
    metadata = dict(response.get("Metadata", {}))
    sha256 = metadata.pop(SHA256_METADATA_KEY, "")
    modified = response.get("LastModified")
    return ObjectInfo(
        key=key,
        size=response.get("ContentLength", 0),
        etag=_etag(response.get("ETag")),
        last_modified=modified.timestamp() if modified is not None else 0.0,
        content_type=response.get("ContentType", ""),
        metadata=metadata,
        sha256=sha256,
    )


def _download_info(key: str, response: GetObjectOutputTypeDef) -> tuple[ObjectInfo, int]:
    """The whole object's info and the first byte served: a ranged answer carries the
    object's size in `Content-Range: bytes 2-5/11`."""
    info = _object_info(key, response)
    content_range = response.get("ContentRange")
    if not content_range:
        return info, 0
    span, _, total = content_range.removeprefix("bytes ").partition("/")
    start = int(span.partition("-")[0])
    size = int(total) if total.isdigit() else info.size
    return ObjectInfo(
        key=key,
        size=size,
        etag=info.etag,
        last_modified=info.last_modified,
        content_type=info.content_type,
        metadata=info.metadata,
        sha256=info.sha256,
    ), start


def _build(context: BuildContext[ObjectStoreServiceConfig]) -> S3Backend:
    connection = context.connection
    assert isinstance(connection, AwsConnection)
    settings = context.settings
    assert settings.bucket is not None  # the settings model requires it for s3
    return S3Backend(
        connection,
        name=context.name,
        bucket=settings.bucket,
        part_size=settings.part_size,
        max_concurrent_parts=settings.max_concurrent_parts,
        chunk_size=settings.chunk_size,
    )


SPEC = BackendSpec(
    type="objectstore",
    backend="s3",
    settings=ObjectStoreServiceConfig,
    build=_build,
    connection_type="aws",
    features=frozenset({PRESIGN}),
)
"""The object store on S3 (and S3-compatible stores), on an aws connection."""
