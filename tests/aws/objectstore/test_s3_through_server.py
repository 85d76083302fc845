"""ObjectStoreService on `backend: s3` through the real grpc.aio server, against moto in
server mode: a 50 MB object streamed in and out byte-identical, no multipart upload left
behind by a caller that cancels or runs out of time half-way, paging with page tokens,
presigned URLs used with httpx, and S3's errors as gRPC statuses with `aws_error_code`."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import httpx
import pytest
from aws.objectstore.s3_helpers import MiB, connection_section, open_uploads, random_bytes
from aws_server import MotoServer
from google.protobuf import duration_pb2
from support import error_info

from generated.integration.v1 import objectstore_pb2 as pb
from generated.integration.v1 import objectstore_pb2_grpc
from sidecar.testing import serve_for_test

Stub = objectstore_pb2_grpc.ObjectStoreServiceStub
_names = itertools.count()

MISSING_BUCKET = "objectstore-s3-never-created"


def config(moto_server: MotoServer, bucket: str) -> str:
    """`files` (5 MiB parts, 3 in flight), `strict` (the same bucket, no retries) and
    `nowhere` (a bucket that does not exist)."""
    s3 = "type: objectstore, backend: s3, connection: moto"
    return f"""
connections:
  moto: {connection_section(moto_server)}
services:
  files: {{{s3}, bucket: {bucket}, part_size: 5MiB, max_concurrent_parts: 3}}
  strict: {{{s3}, bucket: {bucket}, retry_policy: {{max_retries: 0}}}}
  nowhere: {{{s3}, bucket: {MISSING_BUCKET}}}
"""


@pytest.fixture
def bucket_name() -> str:
    return f"objectstore-grpc-{os.getpid()}-{next(_names)}"


@pytest.fixture
async def stub(moto_server: MotoServer, s3: Any, bucket_name: str) -> AsyncIterator[Stub]:
    await s3.create_bucket(Bucket=bucket_name)
    async with (
        serve_for_test(config(moto_server, bucket_name)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield Stub(channel)


def put_requests(
    key: str, blocks: Iterator[bytes], *, sha256: str = "", target: str = "files"
) -> Iterator[pb.PutObjectRequest]:
    yield pb.PutObjectRequest(target=target, header=pb.PutObjectHeader(key=key, sha256=sha256))
    for block in blocks:
        yield pb.PutObjectRequest(data=block)


def blocks_of(data: bytes, size: int = MiB) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


async def get_bytes(stub: Stub, request: pb.GetObjectRequest) -> tuple[pb.GetObjectHead, bytes]:
    head: pb.GetObjectHead | None = None
    parts: list[bytes] = []
    async for message in stub.GetObject(request):
        if message.HasField("head"):
            head = message.head
        else:
            parts.append(message.data)
    assert head is not None
    return head, b"".join(parts)


async def no_uploads_left(s3: Any, bucket: str, within: float = 10.0) -> list[str]:
    """The bucket's open multipart uploads, once there are none or `within` seconds passed:
    the sidecar aborts after the caller has gone, so the test waits for it (bounded)."""
    give_up = time.monotonic() + within
    left = await open_uploads(s3, bucket)
    while left and time.monotonic() < give_up:
        await asyncio.sleep(0.05)
        left = await open_uploads(s3, bucket)
    return left


# -- streaming -------------------------------------------------------------------------------


async def test_a_50_mb_object_streams_in_and_out_byte_identical(
    stub: Stub, s3: Any, bucket_name: str
) -> None:
    data = random_bytes(50 * MiB)
    digest = hashlib.sha256(data).hexdigest()

    put = await stub.PutObject(put_requests("big.bin", blocks_of(data), sha256=digest))

    assert (put.info.size, put.info.sha256) == (len(data), digest)
    head, got = await get_bytes(stub, pb.GetObjectRequest(target="files", key="big.bin"))
    assert (head.info.sha256, head.range_start, head.range_length) == (digest, 0, len(data))
    assert hashlib.sha256(got).hexdigest() == digest
    assert await open_uploads(s3, bucket_name) == []


async def test_a_ranged_get_of_a_multipart_object(stub: Stub) -> None:
    data = random_bytes(11 * MiB)
    await stub.PutObject(put_requests("ranged.bin", blocks_of(data)))
    request = pb.GetObjectRequest(
        target="files",
        key="ranged.bin",
        range=pb.ObjectByteRange(start=5 * MiB - 3, end=5 * MiB + 2),
    )
    head, got = await get_bytes(stub, request)
    assert (head.range_start, head.range_length, head.info.size) == (5 * MiB - 3, 6, len(data))
    assert got == data[5 * MiB - 3 : 5 * MiB + 3]


# -- nothing left behind ---------------------------------------------------------------------


@asynccontextmanager
async def stalled_upload(
    stub: Stub, key: str, after: int, *, seconds: float | None = None
) -> AsyncIterator[tuple[grpc.aio.StreamUnaryCall[Any, Any], asyncio.Event]]:
    """A PutObject call (with a deadline of `seconds`) whose stream sends `after` bytes in
    1 MiB chunks, then stalls until the yielded event is set."""
    gate = asyncio.Event()

    async def requests() -> AsyncIterator[pb.PutObjectRequest]:
        yield pb.PutObjectRequest(target="files", header=pb.PutObjectHeader(key=key))
        block = random_bytes(MiB)
        for _ in range(after // MiB):
            yield pb.PutObjectRequest(data=block)
        await gate.wait()

    call = stub.PutObject(requests(), timeout=seconds)
    try:
        yield call, gate
    finally:
        gate.set()
        call.cancel()


async def test_a_client_cancelling_half_way_leaves_no_multipart_upload(
    stub: Stub, s3: Any, bucket_name: str, moto_server: MotoServer
) -> None:
    async with stalled_upload(stub, "half.bin", 16 * MiB) as (call, _):
        give_up = time.monotonic() + 20
        while moto_server.calls(f"s3:PUT /{bucket_name}/half.bin") < 2:
            assert time.monotonic() < give_up, "the parts never reached the store"
            await asyncio.sleep(0.02)
        assert await open_uploads(s3, bucket_name) == ["half.bin"]
        call.cancel()
    assert await no_uploads_left(s3, bucket_name) == []


async def test_a_deadline_expiring_mid_upload_leaves_no_multipart_upload(
    stub: Stub, s3: Any, bucket_name: str
) -> None:
    async with stalled_upload(stub, "late.bin", 12 * MiB, seconds=2.0) as (call, _):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await no_uploads_left(s3, bucket_name) == []


# -- listing, presigning ---------------------------------------------------------------------


async def test_listing_2500_keys_with_page_tokens(stub: Stub, s3: Any, bucket_name: str) -> None:
    keys = [f"list/{i:05d}" for i in range(2500)]
    semaphore = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with semaphore:
            await s3.put_object(Bucket=bucket_name, Key=key, Body=b"-")

    await asyncio.gather(*(put(key) for key in keys))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListObjects(
            pb.ListObjectsRequest(target="files", prefix="list/", page_size=1000, page_token=token)
        )
        pages += 1
        seen += [info.key for info in page.objects]
        token = page.next_page_token
        if not token:
            break
    assert (pages, seen) == (3, keys)

    with pytest.raises(grpc.aio.AioRpcError) as raised:  # a token of another listing
        await stub.ListObjects(pb.ListObjectsRequest(target="files", prefix="x", page_token="e30"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_presigned_get_and_put_urls_work_with_httpx(stub: Stub) -> None:
    await stub.PutObject(put_requests("shared.txt", iter([b"hello from s3"])))
    minute = duration_pb2.Duration(seconds=60)
    get = await stub.PresignUrl(
        pb.PresignUrlRequest(
            target="files", key="shared.txt", method=pb.PRESIGN_METHOD_GET, expires_in=minute
        )
    )
    put = await stub.PresignUrl(
        pb.PresignUrlRequest(
            target="files",
            key="dropped.txt",
            method=pb.PRESIGN_METHOD_PUT,
            expires_in=minute,
            content_type="text/plain",
        )
    )
    async with httpx.AsyncClient() as client:
        downloaded = await client.get(get.url)
        uploaded = await client.put(
            put.url, content=b"via a url", headers={"Content-Type": "text/plain"}
        )
    assert (downloaded.status_code, downloaded.content) == (200, b"hello from s3")
    assert uploaded.status_code == 200
    head = await stub.HeadObject(pb.HeadObjectRequest(target="files", key="dropped.txt"))
    assert (head.info.size, head.info.content_type) == (9, "text/plain")


# -- errors ----------------------------------------------------------------------------------


async def test_a_stale_etag_is_failed_precondition(stub: Stub) -> None:
    old = await stub.PutObject(put_requests("etag.txt", iter([b"old"])))
    await stub.PutObject(put_requests("etag.txt", iter([b"new"])))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await get_bytes(
            stub, pb.GetObjectRequest(target="files", key="etag.txt", if_match=old.info.etag)
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(raised.value)
    assert (info.reason, info.metadata["aws_error_code"]) == (
        "UPSTREAM_CONDITION_FAILED",
        "PreconditionFailed",
    )


@pytest.mark.parametrize(("target", "code"), [("files", "NoSuchKey"), ("nowhere", "NoSuchBucket")])
async def test_a_missing_key_or_bucket_is_not_found(stub: Stub, target: str, code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await get_bytes(stub, pb.GetObjectRequest(target=target, key="absent"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(raised.value)
    assert (info.reason, info.metadata["aws_error_code"]) == ("UPSTREAM_NOT_FOUND", code)


async def test_a_throttled_call_is_resource_exhausted(
    stub: Stub, moto_server: MotoServer, bucket_name: str
) -> None:
    await stub.PutObject(put_requests("hot.txt", iter([b"x"])))
    moto_server.fail_next(f"s3:GET /{bucket_name}/hot.txt", status=503, code="SlowDown")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await get_bytes(stub, pb.GetObjectRequest(target="strict", key="hot.txt"))
    finally:
        moto_server.clear_faults()
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(raised.value)
    assert (info.reason, info.metadata["aws_error_code"]) == ("UPSTREAM_RATE_LIMITED", "SlowDown")
