"""`S3Backend` against moto in server mode: streamed puts and gets (single PutObject and
multipart), the abort of every unfinished multipart upload (failure, checksum mismatch,
cancellation, deadline), back-pressure on the caller's stream, listing with page tokens,
conditional and ranged gets, copy, delete, presigned URLs used with httpx, and S3's errors
mapped to the sidecar's."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aws.objectstore.s3_helpers import (
    MiB,
    StoreMaker,
    chunks,
    connection_section,
    open_uploads,
    random_bytes,
    sha256_hex,
    upload_body,
)
from aws_server import MotoServer
from faultproxy import FaultProxy
from support import eventually

from sidecar.backends.objectstore.base import ByteRange, GetOptions, PutOptions
from sidecar.backends.objectstore.s3 import S3Backend
from sidecar.config import parse_config
from sidecar.connections.aws import open_connection
from sidecar.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)


async def read_all(store: S3Backend, key: str, options: GetOptions | None = None) -> bytes:
    async with store.get(key, options or GetOptions()) as download:
        return b"".join([chunk async for chunk in download.chunks()])


# -- put and get -----------------------------------------------------------------------------


async def test_a_50_mb_object_streams_in_and_out_byte_identical(
    store: S3Backend, s3: Any, bucket: str, moto_server: MotoServer
) -> None:
    data = random_bytes(50 * MiB)
    digest = sha256_hex(data)
    before = moto_server.calls(f"s3:PUT /{bucket}/big")

    info = await store.put(
        "big", upload_body(chunks(data), digest), PutOptions(metadata={"owner": "ada"})
    )

    assert (info.size, info.sha256, dict(info.metadata)) == (len(data), digest, {"owner": "ada"})
    assert moto_server.calls(f"s3:PUT /{bucket}/big") - before == 10  # 10 parts of 5 MiB
    head = await store.head("big")
    assert (head.size, head.etag, head.sha256) == (len(data), info.etag, digest)
    assert head.metadata == {"owner": "ada"}  # the checksum entry is not the caller's
    hasher = hashlib.sha256()
    async with store.get("big", GetOptions()) as download:
        assert (download.start, download.length, download.info.size) == (0, len(data), len(data))
        async for chunk in download.chunks():
            assert 0 < len(chunk) <= 256 * 1024
            hasher.update(chunk)
    assert hasher.hexdigest() == digest
    assert await open_uploads(s3, bucket) == []


async def test_an_object_within_one_part_is_one_put_object_with_its_sha256(
    store: S3Backend, s3: Any, bucket: str, moto_server: MotoServer
) -> None:
    data = random_bytes(5 * MiB)  # exactly one part: no multipart upload
    before = len(moto_server.log())

    info = await store.put(
        "one", upload_body(chunks(data, 700_000)), PutOptions(content_type="image/png")
    )

    assert moto_server.log()[before:] == [f"s3:PUT /{bucket}/one"]
    assert info.sha256 == sha256_hex(data)  # computed: nothing was declared
    answer = await s3.head_object(Bucket=bucket, Key="one")
    assert answer["Metadata"] == {"sha256": sha256_hex(data)}
    assert answer["ContentType"] == "image/png"
    assert await read_all(store, "one") == data


async def test_an_empty_object(store: S3Backend) -> None:
    info = await store.put("empty", upload_body(chunks(b"")), PutOptions())
    assert (info.size, info.sha256) == (0, sha256_hex(b""))
    assert await read_all(store, "empty") == b""


async def test_a_multipart_upload_without_a_declared_sha256_records_none(
    store: S3Backend, s3: Any, bucket: str
) -> None:
    """Its metadata is fixed before the first byte is read: only a declared sha256 can be
    in it."""
    data = random_bytes(6 * MiB)
    await store.put("undeclared", upload_body(chunks(data)), PutOptions())
    answer = await s3.head_object(Bucket=bucket, Key="undeclared")
    assert "sha256" not in answer["Metadata"]
    assert (await store.head("undeclared")).sha256 == ""
    assert await read_all(store, "undeclared") == data


async def test_ranged_get(store: S3Backend) -> None:
    data = random_bytes(1000)
    await store.put("ranged", upload_body(chunks(data)), PutOptions())

    async with store.get("ranged", GetOptions(range=ByteRange(10, 19))) as download:
        assert (download.start, download.length, download.info.size) == (10, 10, 1000)
        assert b"".join([c async for c in download.chunks()]) == data[10:20]
    tail = await read_all(store, "ranged", GetOptions(range=ByteRange(990, None)))
    assert tail == data[990:]


async def test_leaving_a_download_early_closes_its_body(store: S3Backend) -> None:
    data = random_bytes(4 * MiB)
    await store.put("partly", upload_body(chunks(data)), PutOptions())
    async with store.get("partly", GetOptions()) as download:
        body = download._body  # type: ignore[attr-defined]
        async for _ in download.chunks():
            break
    assert body.raw_stream.closed  # the pooled connection is not held by an unread body
    assert await read_all(store, "partly") == data  # and the next call works


# -- no multipart upload stays behind ---------------------------------------------------------


@pytest.mark.parametrize(
    "abort_fails_once", [False, True], ids=["abort-answers", "abort-fails-once"]
)
async def test_a_failed_part_aborts_the_upload(
    store: S3Backend, s3: Any, bucket: str, moto_server: MotoServer, abort_fails_once: bool
) -> None:
    key = f"failing-{abort_fails_once}"
    moto_server.fail_next(f"s3:PUT /{bucket}/{key}", status=503, code="SlowDown")
    if abort_fails_once:  # the abort is sent again
        moto_server.fail_next(f"s3:DELETE /{bucket}/{key}", status=500, code="InternalError")
    try:
        with pytest.raises(ResourceExhausted) as raised:
            await store.put(key, upload_body(chunks(random_bytes(12 * MiB))), PutOptions())
    finally:
        moto_server.clear_faults()
    assert raised.value.metadata["aws_error_code"] == "SlowDown"  # the caller's, not the abort's
    # AbortMultipartUpload; sent again also when moto failed it, still taking a part in flight.
    aborts = moto_server.calls(f"s3:DELETE /{bucket}/{key}")
    assert aborts == 2 if abort_fails_once else aborts >= 1
    assert await open_uploads(s3, bucket) == []


async def test_an_abort_gone_on_its_second_attempt_counts_as_aborted(
    store: S3Backend, bucket: str, moto_server: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The first abort's answer is lost (500); the second finds the upload gone (404), as it
    # would be had the first one aborted it: nothing more is sent and nothing is reported.
    key = "aborted-unseen"
    moto_server.fail_next(f"s3:PUT /{bucket}/{key}", status=503, code="SlowDown")
    moto_server.fail_next(f"s3:DELETE /{bucket}/{key}", status=500, code="InternalError")
    moto_server.fail_next(f"s3:DELETE /{bucket}/{key}", status=404, code="NoSuchUpload")
    try:
        with pytest.raises(ResourceExhausted):
            await store.put(key, upload_body(chunks(random_bytes(12 * MiB))), PutOptions())
    finally:
        moto_server.clear_faults()
    assert moto_server.calls(f"s3:DELETE /{bucket}/{key}") == 2
    assert "could not abort" not in caplog.text


async def test_a_failed_create_sends_no_part(
    store: S3Backend, s3: Any, bucket: str, moto_server: MotoServer
) -> None:
    moto_server.fail_next(f"s3:POST /{bucket}/uncreated", status=503, code="SlowDown")
    try:
        with pytest.raises(ResourceExhausted):
            await store.put("uncreated", upload_body(chunks(random_bytes(6 * MiB))), PutOptions())
    finally:
        moto_server.clear_faults()
    assert moto_server.calls(f"s3:PUT /{bucket}/uncreated") == 0
    assert await open_uploads(s3, bucket) == []


async def test_a_checksum_mismatch_aborts_before_completing(
    store: S3Backend, s3: Any, bucket: str, moto_server: MotoServer
) -> None:
    data = random_bytes(11 * MiB)
    with pytest.raises(InvalidArgument) as raised:
        await store.put("mismatch", upload_body(chunks(data), "0" * 64), PutOptions())
    assert raised.value.reason == "CHECKSUM_MISMATCH"
    assert await open_uploads(s3, bucket) == []
    assert moto_server.calls(f"s3:POST /{bucket}/mismatch") == 1  # CreateMultipartUpload only
    with pytest.raises(NotFound):
        await store.head("mismatch")


async def test_a_checksum_mismatch_of_a_small_object_stores_nothing(
    store: S3Backend, moto_server: MotoServer, bucket: str
) -> None:
    with pytest.raises(InvalidArgument):
        await store.put("small-mismatch", upload_body(chunks(b"abc"), "0" * 64), PutOptions())
    assert moto_server.calls(f"s3:PUT /{bucket}/small-mismatch") == 0


async def test_an_object_over_max_object_size_aborts_the_upload(
    store: S3Backend, s3: Any, bucket: str
) -> None:
    body = upload_body(chunks(random_bytes(16 * MiB)), max_size=12 * MiB)
    with pytest.raises(InvalidArgument) as raised:
        await store.put("too-big", body, PutOptions())
    assert raised.value.reason == "VALUE_TOO_LARGE"
    assert await open_uploads(s3, bucket) == []
    with pytest.raises(NotFound):
        await store.head("too-big")


async def _stalled(data: bytes, after: int, gate: asyncio.Event) -> AsyncIterator[bytes]:
    """`data` in 1 MiB chunks, stalling after `after` bytes until `gate` is set."""
    async for chunk in chunks(data):
        yield chunk
        after -= len(chunk)
        if after <= 0:
            await gate.wait()


async def test_a_cancelled_upload_leaves_no_multipart_upload(
    store: S3Backend, s3: Any, bucket: str, moto_server: MotoServer
) -> None:
    gate = asyncio.Event()
    data = random_bytes(30 * MiB)
    put = asyncio.create_task(
        store.put("cancelled", upload_body(_stalled(data, 16 * MiB, gate)), PutOptions())
    )
    # Half-way: the first parts are stored, the caller's stream has stalled.
    await eventually(lambda: moto_server.calls(f"s3:PUT /{bucket}/cancelled") >= 3, 20)
    assert moto_server.calls(f"s3:PUT /{bucket}/cancelled") >= 3
    assert await open_uploads(s3, bucket) == ["cancelled"]

    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put

    assert await open_uploads(s3, bucket) == []  # aborted before the cancellation went on


async def test_a_cancellation_while_the_upload_is_created_still_aborts_it(
    moto_server: MotoServer, s3: Any, bucket: str
) -> None:
    """Cancelled while CreateMultipartUpload is on its way, the put waits for S3's answer
    (shielded) and aborts the upload S3 made, so none stays behind."""
    async with FaultProxy(moto_server.host, moto_server.port) as proxy:
        section = connection_section(f"http://{proxy.address}")
        config = parse_config(f"connections:\n  moto: {section}\n")
        pool, timeouts = config.connection_policies("moto")
        endpoint: Any = config.connections["moto"]
        connection = open_connection("moto", endpoint, pool, timeouts)
        store = S3Backend(connection, name="files", bucket=bucket, part_size=5 * MiB)
        try:
            await store.ping()
            reached = asyncio.Event()

            async def source() -> AsyncIterator[bytes]:
                async for chunk in chunks(random_bytes(8 * MiB)):
                    if proxy.paused:
                        reached.set()  # a part and one chunk more read: creating now
                    yield chunk

            proxy.paused = True
            put = asyncio.create_task(store.put("creating", upload_body(source()), PutOptions()))
            await reached.wait()
            put.cancel()
            await asyncio.sleep(0.05)
            proxy.paused = False
            with pytest.raises(asyncio.CancelledError):
                await put
        finally:
            await store.close()
            await connection.close()
    assert moto_server.calls(f"s3:POST /{bucket}/creating") == 1
    assert moto_server.calls(f"s3:DELETE /{bucket}/creating") == 1
    assert await open_uploads(s3, bucket) == []


async def test_a_deadline_expiring_mid_upload_leaves_no_multipart_upload(
    store: S3Backend, s3: Any, bucket: str
) -> None:
    gate = asyncio.Event()
    data = random_bytes(30 * MiB)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await store.put("late", upload_body(_stalled(data, 12 * MiB, gate)), PutOptions())
    assert await open_uploads(s3, bucket) == []


async def test_an_upload_reads_at_most_one_part_ahead_of_its_parts_in_flight(
    make_store: StoreMaker, moto_server: MotoServer, s3: Any, bucket: str
) -> None:
    """Back-pressure: while every slot is busy, the caller's stream is not read, so an
    upload holds at most (max_concurrent_parts + 1) x part_size bytes. moto logs a part
    once its whole body arrived, so `stored` parts are at least the ones that completed."""
    part, slots = 5 * MiB, 2
    store = make_store(part_size=part, max_concurrent_parts=slots)
    consumed = 0
    leads: list[int] = []

    async def counted() -> AsyncIterator[bytes]:
        nonlocal consumed
        async for chunk in chunks(random_bytes(40 * MiB)):
            stored = moto_server.calls(f"s3:PUT /{bucket}/bounded")
            leads.append(consumed - stored * part)
            consumed += len(chunk)
            yield chunk

    await store.put("bounded", upload_body(counted()), PutOptions())

    assert max(leads) <= (slots + 1) * part
    assert max(leads) >= slots * part  # moto was the bottleneck: the bound was reached
    assert await open_uploads(s3, bucket) == []


# -- list, delete, copy ------------------------------------------------------------------------


async def test_listing_page_by_page(store: S3Backend, s3: Any, bucket: str) -> None:
    """(2,500 keys through the gRPC service: test_s3_through_server.)"""
    keys = sorted(f"many/{i:05d}" for i in range(250))
    semaphore = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with semaphore:
            await s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    await asyncio.gather(*(put(key) for key in keys))
    await s3.put_object(Bucket=bucket, Key="other", Body=b"y")

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await store.list("many/", "", 100, token)
        pages += 1
        seen += [item.key for item in page.objects]
        assert all(item.size == 1 and item.etag and item.last_modified for item in page.objects)
        token = page.next_page_token
        if not token:
            break
    assert (pages, seen) == (3, keys)


async def test_listing_with_a_delimiter_gives_common_prefixes(
    store: S3Backend, s3: Any, bucket: str
) -> None:
    for key in ("a/1", "a/2", "b/1", "top"):
        await s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    page = await store.list("", "/", 100, "")
    assert [item.key for item in page.objects] == ["top"]
    assert list(page.common_prefixes) == ["a/", "b/"]
    assert page.next_page_token == ""


async def test_delete_many_keys_a_missing_one_is_no_failure(
    store: S3Backend, s3: Any, bucket: str
) -> None:
    for key in ("d1", "d2"):
        await s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert list(await store.delete(["d1", "d2", "never-there"])) == []
    assert (await store.list("d", "", 10, "")).objects == ()


async def test_copy_keeps_content_type_metadata_and_sha256(store: S3Backend) -> None:
    data = b"copied bytes"
    await store.put(
        "original",
        upload_body(chunks(data)),
        PutOptions(content_type="text/plain", metadata={"k": "v"}),
    )
    info = await store.copy("original", "copy")
    assert (info.key, info.size, info.content_type) == ("copy", len(data), "text/plain")
    assert (dict(info.metadata), info.sha256) == ({"k": "v"}, sha256_hex(data))
    assert await read_all(store, "copy") == data


# -- presigned URLs ---------------------------------------------------------------------------


async def test_presigned_get_and_put_work_with_httpx(store: S3Backend) -> None:
    await store.put("signed", upload_body(chunks(b"for a browser")), PutOptions())
    get_url = await store.presign("signed", "GET", 60, "")
    put_url = await store.presign("uploaded", "PUT", 60, "text/csv")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in get_url  # SigV4, not the deprecated SigV2
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in put_url
    async with httpx.AsyncClient() as client:
        got = await client.get(get_url)
        put = await client.put(put_url, content=b"a,b\n", headers={"Content-Type": "text/csv"})
    assert (got.status_code, got.content) == (200, b"for a browser")
    assert put.status_code == 200
    head = await store.head("uploaded")
    assert (head.size, head.content_type) == (4, "text/csv")


# -- errors ------------------------------------------------------------------------------------


async def test_a_stale_etag_is_a_failed_precondition(store: S3Backend) -> None:
    first = await store.put("versioned", upload_body(chunks(b"one")), PutOptions())
    await store.put("versioned", upload_body(chunks(b"two")), PutOptions())
    with pytest.raises(FailedPrecondition) as raised:
        async with store.get("versioned", GetOptions(if_match=first.etag)):
            pass
    assert raised.value.reason == "UPSTREAM_CONDITION_FAILED"
    assert raised.value.metadata["aws_error_code"] == "PreconditionFailed"
    current = await store.head("versioned")
    assert await read_all(store, "versioned", GetOptions(if_match=current.etag)) == b"two"


async def test_a_missing_key_is_not_found(store: S3Backend) -> None:
    with pytest.raises(NotFound) as raised:
        async with store.get("nothing-here", GetOptions()):
            pass
    assert raised.value.reason == "UPSTREAM_NOT_FOUND"
    assert raised.value.metadata["aws_error_code"] == "NoSuchKey"
    assert raised.value.metadata["target"] == "files"


async def test_a_missing_bucket_is_not_found(make_store: StoreMaker) -> None:
    store = make_store(bucket="objectstore-s3-no-such-bucket")
    with pytest.raises(NotFound) as raised:
        async with store.get("k", GetOptions()):
            pass
    assert raised.value.metadata["aws_error_code"] == "NoSuchBucket"
    with pytest.raises(NotFound):
        await store.ping()


async def test_a_throttled_call_is_resource_exhausted(
    store: S3Backend, moto_server: MotoServer, bucket: str
) -> None:
    await store.put("hot", upload_body(chunks(b"x")), PutOptions())
    moto_server.fail_next(f"s3:GET /{bucket}/hot", status=503, code="SlowDown", retry_after="2")
    try:
        with pytest.raises(ResourceExhausted) as raised:
            async with store.get("hot", GetOptions()):
                pass
    finally:
        moto_server.clear_faults()
    assert raised.value.reason == "UPSTREAM_RATE_LIMITED"
    assert raised.value.metadata["aws_error_code"] == "SlowDown"
    assert raised.value.retry_after == 2.0


async def test_a_5xx_is_unavailable(store: S3Backend, moto_server: MotoServer, bucket: str) -> None:
    moto_server.fail_next(f"s3:GET /{bucket}/down", status=503, code="ServiceUnavailable")
    try:
        with pytest.raises(Unavailable):
            async with store.get("down", GetOptions()):
                pass
    finally:
        moto_server.clear_faults()


async def test_ping_is_head_bucket(store: S3Backend, moto_server: MotoServer, bucket: str) -> None:
    before = len(moto_server.log())
    await store.ping()
    assert moto_server.log()[before:] == [f"s3:HEAD /{bucket}"]


async def test_a_closed_store_refuses_calls(store: S3Backend) -> None:
    await store.close()
    with pytest.raises(Unavailable) as raised:
        await store.head("k")
    assert raised.value.reason == "BACKEND_CLOSED"
