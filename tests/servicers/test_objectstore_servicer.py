"""ObjectStoreService through a real gRPC server on local-folder targets: streaming uploads and
downloads of multi-MB objects, uploads cut off by the caller (cancel, deadline) leaving
nothing behind, every bound answered INVALID_ARGUMENT before any pipeline, and DATA_LOSS
for an object damaged on disk behind the sidecar's back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from support import error_info

from generated.integration.v1 import objectstore_pb2 as pb
from generated.integration.v1.objectstore_pb2_grpc import ObjectStoreServiceStub
from sidecar.testing import serve_for_test

MiB = 1024 * 1024


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "files", tmp_path / "small"


@pytest.fixture
async def stub(roots: tuple[Path, Path]) -> AsyncIterator[ObjectStoreServiceStub]:
    files, small = roots
    idle = files.parent / "idle"
    config = f"""
services:
  files: {{type: objectstore, root: "{files}", default: true}}
  small: {{type: objectstore, root: "{small}", max_object_size: 1000, chunk_size: 1KiB}}
  idle: {{type: objectstore, root: "{idle}", stream_idle_timeout: 300ms, chunk_size: 2MiB}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield ObjectStoreServiceStub(channel)


def upload(
    key: str,
    data: bytes,
    *,
    chunk: int = MiB,
    target: str = "",
    sha256: str = "",
    metadata: dict[str, str] | None = None,
    content_type: str = "",
) -> Iterator[pb.PutObjectRequest]:
    header = pb.PutObjectHeader(
        key=key, content_type=content_type, metadata=metadata or {}, sha256=sha256
    )
    yield pb.PutObjectRequest(target=target, header=header)
    for start in range(0, len(data), chunk):
        yield pb.PutObjectRequest(data=data[start : start + chunk])


async def download(
    stub: ObjectStoreServiceStub, request: pb.GetObjectRequest
) -> tuple[pb.GetObjectHead, list[bytes]]:
    messages = [message async for message in stub.GetObject(request)]
    assert messages[0].HasField("head")
    assert all(message.HasField("data") for message in messages[1:])
    return messages[0].head, [message.data for message in messages[1:]]


def temp_files(root: Path) -> list[str]:
    return [name for name in os.listdir(root) if name.startswith(".sidecar-tmp.")]


async def wait_until(condition: Iterable[object] | object, what: str) -> None:
    """Poll a condition the server reaches on its own (bounded: 5 s)."""
    check = condition if callable(condition) else (lambda: condition)
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_a_multi_megabyte_object_streams_up_and_down_byte_identical(
    stub: ObjectStoreServiceStub, roots: tuple[Path, Path]
) -> None:
    data = os.urandom(9 * MiB + 12345)
    digest = hashlib.sha256(data).hexdigest()
    reply = await stub.PutObject(
        upload("big/blob.bin", data, sha256=digest, metadata={"owner": "ann"}, content_type="x/y")
    )
    assert (reply.info.key, reply.info.size, reply.info.sha256) == (
        "big/blob.bin",
        len(data),
        digest,
    )
    head, chunks = await download(stub, pb.GetObjectRequest(key="big/blob.bin"))
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= 256 * 1024  # the target's chunk_size
    assert (head.range_start, head.range_length, head.info.sha256) == (0, len(data), digest)
    assert head.info.content_type == "x/y" and dict(head.info.metadata) == {"owner": "ann"}
    assert (roots[0] / "big" / "blob.bin").read_bytes() == data
    assert temp_files(roots[0]) == []


async def test_ranges_heads_lists_copies_and_deletes(stub: ObjectStoreServiceStub) -> None:
    await stub.PutObject(upload("d/one", b"0123456789", content_type="text/plain"))
    head, chunks = await download(
        stub, pb.GetObjectRequest(key="d/one", range=pb.ObjectByteRange(start=3, end=5))
    )
    assert b"".join(chunks) == b"345" and (head.range_start, head.range_length) == (3, 3)
    _, chunks = await download(
        stub, pb.GetObjectRequest(key="d/one", range=pb.ObjectByteRange(start=8))
    )
    assert b"".join(chunks) == b"89"
    info = (await stub.HeadObject(pb.HeadObjectRequest(key="d/one"))).info
    _, chunks = await download(stub, pb.GetObjectRequest(key="d/one", if_match=f'"{info.etag}"'))
    assert b"".join(chunks) == b"0123456789"
    copied = await stub.CopyObject(
        pb.CopyObjectRequest(source_key="d/one", destination_key="e/two")
    )
    assert copied.info.sha256 == info.sha256
    listed = await stub.ListObjects(pb.ListObjectsRequest(delimiter="/"))
    assert list(listed.common_prefixes) == ["d/", "e/"] and not listed.objects
    listed = await stub.ListObjects(pb.ListObjectsRequest(page_size=1))
    assert [o.key for o in listed.objects] == ["d/one"] and listed.next_page_token
    listed = await stub.ListObjects(pb.ListObjectsRequest(page_token=listed.next_page_token))
    assert [o.key for o in listed.objects] == ["e/two"] and not listed.next_page_token
    deleted = await stub.DeleteObjects(pb.DeleteObjectsRequest(keys=["d/one", "never"]))
    assert list(deleted.failures) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.HeadObject(pb.HeadObjectRequest(key="d/one"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).reason == "UPSTREAM_NOT_FOUND"


async def test_if_match_on_another_etag_fails_the_precondition(
    stub: ObjectStoreServiceStub,
) -> None:
    await stub.PutObject(upload("k", b"v1"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await download(stub, pb.GetObjectRequest(key="k", if_match="0" * 32))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "UPSTREAM_CONDITION_FAILED"


async def test_a_client_cancelling_an_upload_midway_leaves_no_temporary_file(
    stub: ObjectStoreServiceStub, roots: tuple[Path, Path]
) -> None:
    never = asyncio.Event()

    async def requests() -> AsyncIterator[pb.PutObjectRequest]:
        for message in upload("cancelled", os.urandom(3 * MiB)):
            yield message
        await never.wait()  # the rest never comes

    call = stub.PutObject(requests())
    await wait_until(lambda: temp_files(roots[0]), "the upload's temporary file appears")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_until(lambda: not temp_files(roots[0]), "the temporary file is removed")
    assert os.listdir(roots[0]) == []


async def test_a_deadline_midway_through_an_upload_leaves_no_temporary_file(
    stub: ObjectStoreServiceStub, roots: tuple[Path, Path]
) -> None:
    never = asyncio.Event()

    async def requests() -> AsyncIterator[pb.PutObjectRequest]:
        for message in upload("late", os.urandom(2 * MiB)):
            yield message
        await never.wait()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PutObject(requests(), timeout=1.0)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: not temp_files(roots[0]), "the temporary file is removed")
    assert os.listdir(roots[0]) == []


async def test_a_declared_sha256_that_differs_stores_nothing(
    stub: ObjectStoreServiceStub, roots: tuple[Path, Path]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PutObject(upload("bad", os.urandom(MiB), sha256="ab" * 32))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "CHECKSUM_MISMATCH"
    assert os.listdir(roots[0]) == []


async def test_too_large_an_upload_is_refused_and_stores_nothing(
    stub: ObjectStoreServiceStub, roots: tuple[Path, Path]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PutObject(upload("big", b"x" * 1001, chunk=300, target="small"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "VALUE_TOO_LARGE"
    assert os.listdir(roots[1]) == []


async def test_a_whole_read_of_an_object_damaged_on_disk_ends_in_data_loss(
    stub: ObjectStoreServiceStub, roots: tuple[Path, Path]
) -> None:
    data = os.urandom(600 * 1024)
    await stub.PutObject(upload("rot/file", data))
    path = roots[0] / "rot" / "file"
    stat = path.stat()
    damaged = bytearray(data)
    damaged[400_000] ^= 0xFF  # one flipped bit, as a failing disk would: same size and mtime
    path.write_bytes(bytes(damaged))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    received: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for message in stub.GetObject(pb.GetObjectRequest(key="rot/file")):
            if message.HasField("data"):
                received.append(message.data)
    assert raised.value.code() == grpc.StatusCode.DATA_LOSS
    assert error_info(raised.value).reason == "CHECKSUM_MISMATCH"
    assert len(b"".join(received)) == len(data)  # the bytes went out; the ending says they're bad
    # a truncated file too
    path.write_bytes(data[:1000])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await download(stub, pb.GetObjectRequest(key="rot/file"))
    assert raised.value.code() == grpc.StatusCode.DATA_LOSS
    # a range is served as it is (no whole-object checksum to compare with)
    _, chunks = await download(
        stub, pb.GetObjectRequest(key="rot/file", range=pb.ObjectByteRange(start=0, end=9))
    )
    assert b"".join(chunks) == data[:10]


async def test_a_stalled_upload_ends_after_the_idle_timeout_leaving_nothing(
    stub: ObjectStoreServiceStub, tmp_path: Path
) -> None:
    never = asyncio.Event()

    async def requests() -> AsyncIterator[pb.PutObjectRequest]:
        for message in upload("stalled", os.urandom(MiB), target="idle"):
            yield message
        await never.wait()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PutObject(requests(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert error_info(raised.value).reason == "STREAM_IDLE_TIMEOUT"
    assert os.listdir(tmp_path / "idle") == []


def open_files_under(folder: Path) -> list[str]:
    """Files of this process's open descriptors that lie under `folder`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder) + "/"):
                found.append(target)
    return found


async def test_a_stalled_reader_is_ended_and_the_file_released(
    stub: ObjectStoreServiceStub, tmp_path: Path
) -> None:
    data = os.urandom(48 * MiB)
    await stub.PutObject(upload("large", data, target="idle"))
    call = stub.GetObject(pb.GetObjectRequest(target="idle", key="large"), timeout=20)
    first = await call.read()
    assert first.HasField("head")
    folder = tmp_path / "idle"
    assert open_files_under(folder) == [str(folder / "large")]  # flow control holds the read
    await wait_until(lambda: not open_files_under(folder), "the file is released")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        while await call.read() is not grpc.aio.EOF:
            pass
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert error_info(raised.value).reason == "STREAM_IDLE_TIMEOUT"


def _put(key: str = "k", **header: object) -> list[pb.PutObjectRequest]:
    return [pb.PutObjectRequest(header=pb.PutObjectHeader(key=key, **header))]  # type: ignore[arg-type]


BAD_UPLOADS: dict[str, list[pb.PutObjectRequest]] = {
    "no header": [pb.PutObjectRequest(data=b"x")],
    "empty stream": [],
    "empty key": _put(""),
    "key too long": _put("k" * 1025),
    "control character": _put("a\x01b"),
    "parent segment": _put("../escape"),
    "absolute key": _put("/etc/passwd"),
    "metadata name": _put(metadata={"Upper": "x"}),
    "reserved metadata name": _put(metadata={"sha256": "x"}),
    "metadata value": _put(metadata={"k": "caf\u00e9"}),
    "too many metadata entries": _put(metadata={f"m{i}": "v" for i in range(33)}),
    "metadata too large": _put(metadata={"a": "v" * 1000, "b": "v" * 1000}),
    "content type": _put(content_type="text/\u00e9"),
    "sha256 not hex": _put(sha256="xyz"),
    "header twice": [*_put(), *_put()],
    "chunk too large": [*_put(), pb.PutObjectRequest(data=b"x" * (2 * MiB + 1))],
}


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
async def test_bad_uploads_are_invalid_arguments(
    stub: ObjectStoreServiceStub, roots: tuple[Path, Path], case: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PutObject(iter(BAD_UPLOADS[case]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert not roots[0].exists() or os.listdir(roots[0]) == []


BAD_CALLS: dict[str, tuple[str, object]] = {
    "get empty key": ("GetObject", pb.GetObjectRequest()),
    "get negative start": (
        "GetObject",
        pb.GetObjectRequest(key="k", range=pb.ObjectByteRange(start=-1)),
    ),
    "get end before start": (
        "GetObject",
        pb.GetObjectRequest(key="k", range=pb.ObjectByteRange(start=5, end=4)),
    ),
    "get etag too long": ("GetObject", pb.GetObjectRequest(key="k", if_match="e" * 257)),
    "head key too long": ("HeadObject", pb.HeadObjectRequest(key="k" * 1025)),
    "list page size": ("ListObjects", pb.ListObjectsRequest(page_size=1001)),
    "list negative page size": ("ListObjects", pb.ListObjectsRequest(page_size=-1)),
    "list delimiter": ("ListObjects", pb.ListObjectsRequest(delimiter="/" * 33)),
    "list prefix": ("ListObjects", pb.ListObjectsRequest(prefix="p" * 1025)),
    "list token": ("ListObjects", pb.ListObjectsRequest(page_token="garbage")),
    "list long token": ("ListObjects", pb.ListObjectsRequest(page_token="t" * 4097)),
    "delete none": ("DeleteObjects", pb.DeleteObjectsRequest()),
    "delete too many": ("DeleteObjects", pb.DeleteObjectsRequest(keys=["k"] * 1001)),
    "delete bad key": ("DeleteObjects", pb.DeleteObjectsRequest(keys=["ok", ""])),
    "copy empty source": ("CopyObject", pb.CopyObjectRequest(destination_key="d")),
    "copy escaping destination": (
        "CopyObject",
        pb.CopyObjectRequest(source_key="s", destination_key="../d"),
    ),
    "presign no method": (
        "PresignUrl",
        pb.PresignUrlRequest(key="k", expires_in=duration_pb2.Duration(seconds=60)),
    ),
    "presign unknown method": (
        "PresignUrl",
        pb.PresignUrlRequest(
            key="k",
            method=7,  # type: ignore[arg-type]  # a value a newer client might send
            expires_in=duration_pb2.Duration(seconds=60),
        ),
    ),
    "presign no expiry": (
        "PresignUrl",
        pb.PresignUrlRequest(key="k", method=pb.PRESIGN_METHOD_GET),
    ),
    "presign too short": (
        "PresignUrl",
        pb.PresignUrlRequest(
            key="k", method=pb.PRESIGN_METHOD_GET, expires_in=duration_pb2.Duration(nanos=5)
        ),
    ),
    "presign too long": (
        "PresignUrl",
        pb.PresignUrlRequest(
            key="k",
            method=pb.PRESIGN_METHOD_GET,
            expires_in=duration_pb2.Duration(seconds=7 * 24 * 3600 + 1),
        ),
    ),
    "presign content type on get": (
        "PresignUrl",
        pb.PresignUrlRequest(
            key="k",
            method=pb.PRESIGN_METHOD_GET,
            expires_in=duration_pb2.Duration(seconds=60),
            content_type="text/plain",
        ),
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS, ids=list(BAD_CALLS))
async def test_bounds_are_invalid_arguments(stub: ObjectStoreServiceStub, case: str) -> None:
    method, request = BAD_CALLS[case]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if method == "GetObject":
            await download(stub, request)  # type: ignore[arg-type]
        else:
            await getattr(stub, method)(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()


async def test_presign_on_a_local_folder_is_unsupported(stub: ObjectStoreServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PresignUrl(
            pb.PresignUrlRequest(
                key="k", method=pb.PRESIGN_METHOD_GET, expires_in=duration_pb2.Duration(seconds=60)
            )
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "UNSUPPORTED_OPERATION"


async def test_the_embedded_default_serves_without_a_config() -> None:
    async with (
        serve_for_test() as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = ObjectStoreServiceStub(channel)
        await stub.PutObject(upload("hello.txt", b"hi"))
        _, chunks = await download(stub, pb.GetObjectRequest(key="hello.txt"))
        assert chunks == [b"hi"]
        root = Path(running.integrations.get("objects").backend.root)  # type: ignore[union-attr]
        assert (root / "hello.txt").read_bytes() == b"hi"
    assert root.name not in os.listdir(root.parent)  # the private folder goes with the sidecar
