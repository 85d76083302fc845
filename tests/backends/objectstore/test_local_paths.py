"""The local-folder object store never reaches outside its folder: every key that could
(parent segments, absolute paths, backslashes, NUL, symlinks on the path) is refused with
INVALID_ARGUMENT and nothing is written, read or deleted outside; and the folder's own files
(metadata, temporary files) stay out of sight."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from sidecar.backends.objectstore import GetOptions, PutOptions, UploadBody
from sidecar.backends.objectstore.local import LocalFolderBackend
from sidecar.errors import DataLoss, FailedPrecondition, InvalidArgument

ESCAPES = [
    "../x",
    "a/../../x",
    "a/..",
    "..",
    "/etc/passwd",
    "a\\b",
    "..\\x",
    "a\x00b",
    "./x",
    "a//b",
    "a/",
    ".sidecar-meta.x.json",
    "a/.sidecar-tmp.0123",
    "x" * 300,
]


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def body(data: bytes = b"payload") -> UploadBody:
    return UploadBody(_chunks([data]), max_object_size=1 << 20)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_bytes(b"do not touch")
    return folder


@pytest.fixture
async def store(tmp_path: Path, outside: Path) -> AsyncIterator[LocalFolderBackend]:
    backend = LocalFolderBackend(str(tmp_path / "root"))
    yield backend
    await backend.close()


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under a folder (symlinks as their target), to compare before and after."""
    seen: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            seen[relative] = "-> " + os.readlink(path)
        elif path.is_file():
            seen[relative] = path.read_bytes()
        else:
            seen[relative] = "dir"
    return seen


async def refused_everywhere(store: LocalFolderBackend, key: str) -> None:
    with pytest.raises(InvalidArgument):
        await store.put(key, body(), PutOptions())
    with pytest.raises(InvalidArgument):
        async with store.get(key, GetOptions()):
            pass
    with pytest.raises(InvalidArgument):
        await store.head(key)
    with pytest.raises(InvalidArgument):
        await store.copy(key, "fine")
    with pytest.raises(InvalidArgument):
        await store.copy("fine", key)


@pytest.mark.parametrize("key", ESCAPES, ids=repr)
async def test_escaping_keys_are_refused_and_write_nothing(
    store: LocalFolderBackend, tmp_path: Path, key: str
) -> None:
    await store.put("fine", body(), PutOptions())
    before = snapshot(tmp_path)
    await refused_everywhere(store, key)
    with pytest.raises(InvalidArgument):
        await store.delete([key])
    assert snapshot(tmp_path) == before


async def test_a_symlink_inside_the_root_pointing_out_is_refused(
    store: LocalFolderBackend, tmp_path: Path, outside: Path
) -> None:
    root = Path(store.root)
    (root / "passwd").symlink_to(outside / "secret")
    await store.put("fine", body(), PutOptions())
    before = snapshot(tmp_path)
    await refused_everywhere(store, "passwd")
    assert list(await store.delete(["passwd"])) != []  # refused, the link left alone
    assert snapshot(tmp_path) == before
    assert (outside / "secret").read_bytes() == b"do not touch"


@pytest.mark.parametrize("where", ["link", "a/link", "a/b/link"])
async def test_a_symlinked_folder_on_the_path_is_refused(
    store: LocalFolderBackend, tmp_path: Path, outside: Path, where: str
) -> None:
    root = Path(store.root)
    (root / where).parent.mkdir(parents=True, exist_ok=True)
    (root / where).symlink_to(outside, target_is_directory=True)
    await store.put("fine", body(), PutOptions())
    before = snapshot(tmp_path)
    for key in (f"{where}/secret", f"{where}/new", f"{where}/deeper/new"):
        await refused_everywhere(store, key)
        await store.delete([key])  # refused or not there: nothing outside changes
    assert snapshot(tmp_path) == before
    assert sorted(os.listdir(outside)) == ["secret"]


async def test_the_root_may_itself_be_reached_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    backend = LocalFolderBackend(str(tmp_path / "alias"))
    try:
        await backend.put("a/b", body(b"via alias"), PutOptions())
        assert (tmp_path / "real" / "a" / "b").read_bytes() == b"via alias"
    finally:
        await backend.close()


async def test_listings_hide_the_folders_own_files_and_symlinks(
    store: LocalFolderBackend, outside: Path
) -> None:
    root = Path(store.root)
    await store.put("a/one", body(), PutOptions("text/plain", {"k": "v"}))
    (root / "a" / "link").symlink_to(outside / "secret")
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    assert any(name.startswith(".sidecar-meta.") for name in os.listdir(root / "a"))
    page = await store.list("", "", 1000, "")
    assert [info.key for info in page.objects] == ["a/one"]
    page = await store.list("", "/", 1000, "")
    assert (list(page.objects), list(page.common_prefixes)) == ([], ["a/"])


async def test_a_file_dropped_in_by_hand_is_served_as_foreign(store: LocalFolderBackend) -> None:
    root = Path(store.root)
    (root / "docs").mkdir()
    (root / "docs" / "notes.txt").write_bytes(b"by hand")
    info = await store.head("docs/notes.txt")
    assert (info.size, info.sha256, info.content_type) == (7, "", "text/plain")
    assert info.etag == (await store.head("docs/notes.txt")).etag  # stable


async def test_a_key_cannot_be_both_an_object_and_a_folder(store: LocalFolderBackend) -> None:
    await store.put("a", body(), PutOptions())
    with pytest.raises(FailedPrecondition) as raised:
        await store.put("a/b", body(), PutOptions())
    assert raised.value.reason == "OPERATION_NOT_ALLOWED"
    await store.put("c/d", body(), PutOptions())
    with pytest.raises(FailedPrecondition):
        await store.put("c", body(), PutOptions())
    assert sorted(name for name in os.listdir(store.root) if not name.startswith(".")) == [
        "a",
        "c",
    ]


async def test_deleting_the_last_object_of_a_folder_removes_the_folder(
    store: LocalFolderBackend,
) -> None:
    await store.put("x/y/z", body(), PutOptions())
    await store.put("x/keep", body(), PutOptions())
    assert list(await store.delete(["x/y/z"])) == []
    assert sorted(os.listdir(Path(store.root) / "x")) == [".sidecar-meta.keep.json", "keep"]


async def test_copying_a_damaged_object_is_data_loss_and_copies_nothing(
    store: LocalFolderBackend,
) -> None:
    await store.put("src", body(b"0123456789"), PutOptions())
    path = Path(store.root) / "src"
    stat = path.stat()
    path.write_bytes(b"0123456780")  # same size and mtime: rot the sidecar did not see
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataLoss) as raised:
        await store.copy("src", "dst")
    assert raised.value.reason == "CHECKSUM_MISMATCH"
    assert sorted(os.listdir(store.root)) == [".sidecar-meta.src.json", "src"]


async def test_leftover_temporary_files_are_swept_at_start(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / ".sidecar-tmp.deadbeef").write_bytes(b"half an upload")
    backend = LocalFolderBackend(str(root))
    try:
        assert os.listdir(root) == []
    finally:
        await backend.close()


async def test_a_failed_upload_leaves_no_temporary_file(store: LocalFolderBackend) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise RuntimeError("the caller went away")

    with pytest.raises(RuntimeError):
        await store.put("k", UploadBody(failing(), max_object_size=1 << 20), PutOptions())
    with pytest.raises(InvalidArgument):
        await store.put("k", UploadBody(_chunks([b"x"] * 10), max_object_size=5), PutOptions())
    assert os.listdir(store.root) == []
