"""The multipart upload of the S3 object store: the caller's stream cut into parts, at most
`max_concurrent` parts in flight, and an abort that always runs when the upload does not
complete.

Memory: a part is read from the caller only when it can be sent, except for one: while
every slot is busy, the next part waits, read. So one upload holds at most
(`max_concurrent` + 1) x `part_size` bytes (plus the overshoot of one incoming chunk), and
a slow store slows the caller down (back-pressure through gRPC flow control) instead of
filling the sidecar's memory.

The abort: on any exception, `asyncio.CancelledError` included (the caller went away, the
deadline expired), the parts in flight are cancelled and awaited, then AbortMultipartUpload
runs in a task of its own, shielded from the cancellation and bounded by `ABORT_TIMEOUT`
(sent again, per `ABORT_RETRY`, while it fails transiently);
the original error is re-raised. S3 keeps (and bills) the parts of an upload that is
neither completed nor aborted, so a bucket used by the sidecar should still have a
lifecycle rule `AbortIncompleteMultipartUpload` for the one case this cannot cover (the
process killed mid-upload).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from sidecar.backends.objectstore._s3_part import MappedPart
from sidecar.connections.aws import AwsErrors
from sidecar.errors import NotFound, ResourceExhausted, SidecarError
from sidecar.resilience import RetryOptions, backoff_delay

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import (
        CompletedPartTypeDef,
        CompleteMultipartUploadOutputTypeDef,
    )

    from sidecar.backends.objectstore.base import UploadBody

__all__ = ["ABORT_TIMEOUT", "MAX_PARTS", "MultipartUpload", "PartReader"]

_log = logging.getLogger("sidecar.backends.objectstore")

ABORT_TIMEOUT: Final = 10.0
"""Seconds an AbortMultipartUpload (after the parts in flight stopped) may take."""

ABORT_RETRY: Final = RetryOptions(max_retries=2, base_delay=0.1, jitter=False)
"""An abort failing transiently is sent again after 0.1 s, then 0.2 s: time for the parts
still arriving to land."""

MAX_PARTS: Final = 10_000
"""S3's limit of parts per upload."""


class PartReader:
    """The caller's chunks (of any size), cut into parts of an exact size.

    A part is a `MappedPart` the chunks are copied into as they arrive: one copy of each
    byte, which aiohttp then sends in 64 KiB slices straight from it, so a part in flight
    is never copied again (a `bytes` body would be: botocore wraps it in a BytesIO that
    shares it, and aiohttp's `getbuffer()` unshares it).
    """

    __slots__ = ("_chunks", "_rest", "ended")

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._rest: memoryview | None = None
        """What is left of the chunk that straddled the last part's end."""
        self.ended = False
        """The caller's stream has ended."""

    async def read_part(self, size: int) -> MappedPart:
        """The next `size` bytes (fewer at the end of the stream) in a part buffer of its own
        (see `MappedPart`: pages never written cost no memory, so a small object's part is
        small)."""
        part = MappedPart(size)
        filled = 0
        while filled < size:
            view = await self._next()
            if view is None:
                break
            need = size - filled
            if len(view) > need:
                self._rest = view[need:]
                view = view[:need]
            part.append(view)
            filled += len(view)
        return part

    async def more(self) -> bool:
        """Whether the stream has bytes left (reads one chunk ahead to know)."""
        if self._rest is None:
            self._rest = await self._next()
        return self._rest is not None

    async def _next(self) -> memoryview | None:
        if self._rest is not None:
            rest, self._rest = self._rest, None
            return rest
        while not self.ended:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self.ended = True
                break
            if chunk:
                return memoryview(chunk)
        return None


class MultipartUpload:
    """One multipart upload of one object (see the module)."""

    def __init__(
        self,
        client: S3Client,
        *,
        errors: AwsErrors,
        bucket: str,
        key: str,
        part_size: int,
        max_concurrent: int,
        on_abort: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self._client = client
        self._errors = errors
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._max_concurrent = max_concurrent
        self._on_abort = on_abort
        self._in_flight: set[asyncio.Task[CompletedPartTypeDef]] = set()

    async def run(
        self,
        first: MappedPart,
        reader: PartReader,
        body: UploadBody,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> CompleteMultipartUploadOutputTypeDef:
        """Create the upload, send `first` and every part left in `reader`, verify `body`,
        complete; abort on any failure (see the module)."""
        creating = asyncio.ensure_future(self._create(content_type, metadata))
        try:
            upload_id = await asyncio.shield(creating)
        except BaseException as error:
            first.close()
            if isinstance(error, asyncio.CancelledError):
                # S3 may create the upload all the same: abort it once its id is known.
                await asyncio.shield(self._track(self._abort_when_created(creating)))
            raise
        try:
            parts = await self._send_parts(upload_id, first, reader)
            body.verify()  # before CompleteMultipartUpload: a mismatch never becomes visible
            with self._errors:
                return await self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            await self._abandon(upload_id)
            raise

    async def _create(self, content_type: str, metadata: Mapping[str, str]) -> str:
        with self._errors:
            created = await self._client.create_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                ContentType=content_type,
                Metadata=dict(metadata),
            )
        return created["UploadId"]

    async def _send_parts(
        self, upload_id: str, first: MappedPart, reader: PartReader
    ) -> list[CompletedPartTypeDef]:
        done: list[CompletedPartTypeDef] = []
        in_flight = self._in_flight
        in_flight.add(asyncio.create_task(self._send_part(upload_id, 1, first)))
        del first
        number = 1
        while await reader.more():
            number += 1
            if number > MAX_PARTS:
                raise ResourceExhausted(
                    f"the object needs more than {MAX_PARTS} parts of {self._part_size} "
                    "bytes (S3's limit); raise part_size",
                    reason="VALUE_TOO_LARGE",
                    metadata={"key": self._key},
                )
            data = await reader.read_part(self._part_size)
            self._collect(done, [task for task in in_flight if task.done()])
            if len(in_flight) >= self._max_concurrent:  # every slot busy: wait for one
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                self._collect(done, finished)
            in_flight.add(asyncio.create_task(self._send_part(upload_id, number, data)))
            del data
        while in_flight:
            finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_EXCEPTION)
            self._collect(done, finished)
        done.sort(key=lambda part: part["PartNumber"])
        return done

    def _collect(
        self,
        done: list[CompletedPartTypeDef],
        finished: Iterable[asyncio.Task[CompletedPartTypeDef]],
    ) -> None:
        """Move finished parts out of flight; the first failed one raises its error."""
        for task in finished:
            self._in_flight.discard(task)
            done.append(task.result())

    async def _send_part(
        self, upload_id: str, number: int, data: MappedPart
    ) -> CompletedPartTypeDef:
        try:
            with self._errors:
                answer = await self._client.upload_part(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                )
        finally:
            data.close()  # its memory goes back now, whatever happened
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def _abandon(self, upload_id: str) -> None:
        """Run the abort in its own task and wait for it; a cancellation of this wait does
        not stop the abort (the store tracks the task until it ends)."""
        await asyncio.shield(self._track(self._abort(upload_id)))

    def _track(self, cleanup: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(cleanup)
        self._on_abort(task)
        return task

    async def _abort_when_created(self, creating: asyncio.Future[str]) -> None:
        done, _ = await asyncio.wait([creating], timeout=ABORT_TIMEOUT)
        if done and not creating.cancelled() and creating.exception() is None:
            await self._abort(creating.result())

    async def _abort(self, upload_id: str) -> None:
        in_flight = list(self._in_flight)
        self._in_flight.clear()
        for task in in_flight:
            task.cancel()
        if in_flight:
            # Their results are dropped on purpose: the upload is abandoned.
            await asyncio.wait(in_flight, timeout=ABORT_TIMEOUT)
        try:
            async with asyncio.timeout(ABORT_TIMEOUT):
                await self._abort_upload(upload_id)
        except Exception as exc:  # the original error matters more than this one
            _log.warning(
                f"could not abort the multipart upload of {self._key!r}; S3 keeps its parts "
                "until a lifecycle rule (AbortIncompleteMultipartUpload) removes them",
                extra={"key": self._key, "upload_id": upload_id, "error": repr(exc)},
            )
        for task in in_flight:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: no "exception never retrieved" noise

    async def _abort_upload(self, upload_id: str) -> None:
        """AbortMultipartUpload, sent again after a transient failure: a part the store is
        still receiving when the abort arrives can make the abort fail, and S3 documents
        aborting again as the remedy. Gone on a later attempt means aborted."""
        for retry in range(ABORT_RETRY.max_retries + 1):
            if retry:
                await asyncio.sleep(backoff_delay(ABORT_RETRY, retry, random.random))
            try:
                with self._errors:
                    await self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=self._key, UploadId=upload_id
                    )
                return
            except NotFound:
                if not retry:
                    raise
                return  # an earlier attempt did abort it; only its answer was lost
            except SidecarError as exc:
                if not exc.transient or retry == ABORT_RETRY.max_retries:
                    raise
