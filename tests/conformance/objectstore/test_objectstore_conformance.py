"""What every object-store backend does the same way, run against each row of the table in
conftest.py: uploads stored only whole and checked, reads by range and ETag, S3 listing
semantics (order, prefix, delimiter, pages), deletes, copies, and the errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable

import pytest

from sidecar.backends.objectstore import (
    ByteRange,
    GetOptions,
    ObjectInfo,
    ObjectStoreBackend,
    PutOptions,
    UploadBody,
)
from sidecar.errors import FailedPrecondition, InvalidArgument, NotFound

MiB = 1024 * 1024
StoreMaker = Callable[..., ObjectStoreBackend]


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


async def put(
    store: ObjectStoreBackend,
    key: str,
    data: bytes,
    *,
    content_type: str = "application/octet-stream",
    metadata: dict[str, str] | None = None,
    sha256: str | None = None,
    chunk: int = 64 * 1024,
    max_object_size: int = 64 * MiB,
) -> ObjectInfo:
    body = UploadBody(
        _chunks(_split(data, chunk)), declared_sha256=sha256, max_object_size=max_object_size
    )
    return await store.put(key, body, PutOptions(content_type, metadata or {}))


async def read(store: ObjectStoreBackend, key: str, options: GetOptions | None = None) -> bytes:
    async with store.get(key, options or GetOptions()) as download:
        return b"".join([chunk async for chunk in download.chunks()])


async def list_all(
    store: ObjectStoreBackend, prefix: str = "", delimiter: str = "", page_size: int = 1000
) -> tuple[list[str], list[str], int]:
    """Every key and common prefix of a listing, following its pages; and the page count."""
    keys: list[str] = []
    prefixes: list[str] = []
    token, pages = "", 0
    while True:
        page = await store.list(prefix, delimiter, page_size, token)
        pages += 1
        assert len(page.objects) + len(page.common_prefixes) <= page_size
        keys += [info.key for info in page.objects]
        prefixes += page.common_prefixes
        token = page.next_page_token
        if not token:
            return keys, prefixes, pages


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_put_then_get_round_trips_bytes_and_info(store: ObjectStoreBackend) -> None:
    data = os.urandom(700 * 1024)
    info = await put(
        store, "docs/report.bin", data, content_type="application/pdf", metadata={"owner": "ann"}
    )
    assert (info.key, info.size, info.sha256) == ("docs/report.bin", len(data), sha(data))
    assert info.etag and '"' not in info.etag
    assert info.content_type == "application/pdf" and dict(info.metadata) == {"owner": "ann"}
    async with store.get("docs/report.bin", GetOptions()) as download:
        assert (download.start, download.length) == (0, len(data))
        assert download.info.sha256 == sha(data) and download.info.etag == info.etag
        chunks = [chunk async for chunk in download.chunks()]
    assert b"".join(chunks) == data
    assert all(len(chunk) <= 256 * 1024 for chunk in chunks)  # the default chunk_size


async def test_head_returns_the_info_and_metadata_of_the_put(store: ObjectStoreBackend) -> None:
    metadata = {"owner": "ann", "x-trace.id": "abc_123", "empty": ""}
    put_info = await put(store, "meta.txt", b"hello", content_type="text/plain", metadata=metadata)
    head = await store.head("meta.txt")
    assert head.key == "meta.txt" and head.size == 5
    assert head.etag == put_info.etag and head.sha256 == sha(b"hello")
    assert head.content_type == "text/plain"
    assert dict(head.metadata) == metadata  # the sidecar's own sha256 entry is not in it
    assert head.last_modified > 0


async def test_an_empty_object_round_trips(store: ObjectStoreBackend) -> None:
    info = await put(store, "empty", b"")
    assert (info.size, info.sha256) == (0, sha(b""))
    assert await read(store, "empty") == b""
    assert (await store.head("empty")).size == 0


async def test_put_replaces_the_object(store: ObjectStoreBackend) -> None:
    first = await put(store, "k", b"one")
    second = await put(store, "k", b"two!", content_type="text/plain")
    assert first.etag != second.etag
    assert await read(store, "k") == b"two!"
    assert (await store.head("k")).content_type == "text/plain"


@pytest.mark.parametrize(
    ("byte_range", "expected"),
    [
        (ByteRange(0, 0), b"0"),
        (ByteRange(2, 5), b"2345"),
        (ByteRange(7, None), b"789"),
        (ByteRange(8, 1000), b"89"),  # an end past the object is clamped
        (ByteRange(0, None), b"0123456789"),
    ],
)
async def test_ranges_serve_those_bytes(
    store: ObjectStoreBackend, byte_range: ByteRange, expected: bytes
) -> None:
    await put(store, "digits", b"0123456789")
    async with store.get("digits", GetOptions(range=byte_range)) as download:
        assert download.start == byte_range.start and download.length == len(expected)
        assert download.info.size == 10  # of the whole object
        assert b"".join([chunk async for chunk in download.chunks()]) == expected


async def test_a_range_past_the_end_is_invalid(store: ObjectStoreBackend) -> None:
    await put(store, "digits", b"0123456789")
    with pytest.raises(InvalidArgument):
        async with store.get("digits", GetOptions(range=ByteRange(10, None))):
            pass


async def test_if_match_serves_the_current_etag_only(store: ObjectStoreBackend) -> None:
    info = await put(store, "versioned", b"v1")
    assert await read(store, "versioned", GetOptions(if_match=info.etag)) == b"v1"
    await put(store, "versioned", b"v2")
    with pytest.raises(FailedPrecondition) as raised:
        await read(store, "versioned", GetOptions(if_match=info.etag))
    assert raised.value.reason == "UPSTREAM_CONDITION_FAILED"


async def test_a_missing_key_is_not_found(store: ObjectStoreBackend) -> None:
    for call in (
        lambda: store.head("nope/missing"),
        lambda: read(store, "nope/missing"),
        lambda: store.copy("nope/missing", "elsewhere"),
    ):
        with pytest.raises(NotFound) as raised:
            await call()
        assert raised.value.reason == "UPSTREAM_NOT_FOUND"


async def test_a_declared_sha256_that_differs_stores_nothing(store: ObjectStoreBackend) -> None:
    await put(store, "kept", b"original")
    with pytest.raises(InvalidArgument) as raised:
        await put(store, "kept", b"tampered", sha256=sha(b"something else"))
    assert raised.value.reason == "CHECKSUM_MISMATCH"
    with pytest.raises(InvalidArgument):
        await put(store, "fresh", os.urandom(300 * 1024), sha256="0" * 64)
    assert await read(store, "kept") == b"original"
    with pytest.raises(NotFound):
        await store.head("fresh")
    assert (await list_all(store))[0] == ["kept"]


async def test_a_declared_sha256_that_matches_is_recorded(store: ObjectStoreBackend) -> None:
    data = os.urandom(1000)
    info = await put(store, "checked", data, sha256=sha(data))
    assert info.sha256 == sha(data) == (await store.head("checked")).sha256


async def test_too_large_an_object_stores_nothing(make_store: StoreMaker) -> None:
    store = make_store()
    with pytest.raises(InvalidArgument) as raised:
        await put(store, "big", b"x" * 5000, chunk=1000, max_object_size=4096)
    assert raised.value.reason == "VALUE_TOO_LARGE"
    with pytest.raises(NotFound):
        await store.head("big")


async def test_listing_pages_through_every_key_in_order(store: ObjectStoreBackend) -> None:
    keys = [*sorted(f"bulk/{i:04d}" for i in range(250)), "bulk-x", "bulk.y", "bulk0"]
    for key in keys:
        await put(store, key, key.encode())
    listed, prefixes, pages = await list_all(store, page_size=100)
    assert listed == sorted(keys, key=str.encode) and prefixes == [] and pages == 3
    page = await store.list("", "", 1000, "")
    assert page.next_page_token == "" and [info.key for info in page.objects] == listed
    by_key = {info.key: info for info in page.objects}
    assert by_key["bulk/0007"].size == len(b"bulk/0007") and by_key["bulk/0007"].etag


async def test_listing_orders_by_utf8_bytes(store: ObjectStoreBackend) -> None:
    keys = ["q-b", "q/b", "q0", "qZ", "q~", "é", "z", "q.x", "q/b/c", "q/a"]
    for key in keys:
        if key != "q/b":  # "q/b" and "q/b/c" cannot both be files of a folder
            await put(store, key, b".")
    listed, _, _ = await list_all(store, page_size=3)
    assert listed == sorted((key for key in keys if key != "q/b"), key=str.encode)


async def test_prefix_and_delimiter_roll_keys_into_common_prefixes(
    store: ObjectStoreBackend,
) -> None:
    for key in [
        "photos/2025/a.jpg",
        "photos/2025/b.jpg",
        "photos/2026/c.jpg",
        "photos/top.jpg",
        "photos-old/x",
        "readme",
        "videos/v.mp4",
    ]:
        await put(store, key, b".")
    keys, prefixes, _ = await list_all(store, delimiter="/")
    assert keys == ["readme"] and prefixes == ["photos-old/", "photos/", "videos/"]
    keys, prefixes, _ = await list_all(store, prefix="photos/", delimiter="/")
    assert keys == ["photos/top.jpg"] and prefixes == ["photos/2025/", "photos/2026/"]
    keys, prefixes, _ = await list_all(store, prefix="photos/20")
    assert keys == ["photos/2025/a.jpg", "photos/2025/b.jpg", "photos/2026/c.jpg"]
    keys, prefixes, _ = await list_all(store, prefix="nothing/")
    assert (keys, prefixes) == ([], [])


async def test_pages_count_common_prefixes_once_each(store: ObjectStoreBackend) -> None:
    for folder in range(5):
        for item in range(3):
            await put(store, f"d{folder}/i{item}", b".")
    await put(store, "d2x", b".")
    keys, prefixes, pages = await list_all(store, delimiter="/", page_size=2)
    assert prefixes == [f"d{folder}/" for folder in range(5)] and keys == ["d2x"]
    assert pages == 3


async def test_a_foreign_page_token_is_invalid(store: ObjectStoreBackend) -> None:
    for i in range(3):
        await put(store, f"t/{i}", b".")
    page = await store.list("t/", "", 1, "")
    assert page.next_page_token
    with pytest.raises(InvalidArgument):
        await store.list("t/", "", 1, "not-a-token-of-ours!")


async def test_delete_removes_keys_and_ignores_missing_ones(store: ObjectStoreBackend) -> None:
    for key in ["del/a", "del/b", "keep"]:
        await put(store, key, b".")
    failures = await store.delete(["del/a", "del/b", "del/never-there"])
    assert list(failures) == []
    assert (await list_all(store))[0] == ["keep"]
    with pytest.raises(NotFound):
        await store.head("del/a")
    assert list(await store.delete(["del/a"])) == []  # twice: still fine


async def test_copy_keeps_content_type_metadata_and_checksum(store: ObjectStoreBackend) -> None:
    data = os.urandom(400 * 1024)
    await put(store, "src/one", data, content_type="image/png", metadata={"owner": "bob"})
    info = await store.copy("src/one", "dst/one")
    assert (info.key, info.size) == ("dst/one", len(data))
    head = await store.head("dst/one")
    assert head.content_type == "image/png" and dict(head.metadata) == {"owner": "bob"}
    assert head.sha256 == sha(data)
    assert await read(store, "dst/one") == data
    assert await read(store, "src/one") == data


@pytest.mark.needs("presign")
async def test_presign_signs_a_url_for_the_key(store: ObjectStoreBackend) -> None:
    await put(store, "shared/file.txt", b"hi")
    url = await store.presign("shared/file.txt", "GET", 60.0, "")
    assert url.startswith("http") and "shared/file.txt" in url
    url = await store.presign("shared/up.txt", "PUT", 3600.0, "text/plain")
    assert "shared/up.txt" in url


async def test_reads_release_the_object_when_left_early(store: ObjectStoreBackend) -> None:
    data = os.urandom(2 * MiB)
    await put(store, "partial", data)
    for _ in range(20):  # each read stops after one chunk; nothing piles up
        async with store.get("partial", GetOptions()) as download:
            async for _chunk in download.chunks():
                break
    assert await read(store, "partial") == data
