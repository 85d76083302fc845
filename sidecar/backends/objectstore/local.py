"""The local-folder object store: each object a file under one folder, the embedded default.

- **Layout**: key `a/b/c.txt` is the file `<root>/a/b/c.txt`, so the folder reads naturally.
  Its content type, user metadata and SHA-256 live in `.sidecar-meta.<name>.json` beside
  it, with the data file's size and mtime. A data file changed behind the sidecar's back
  keeps its recorded SHA-256 (a whole read then ends in DATA_LOSS: replace objects through
  the sidecar, or delete the metadata file too) and gets a new ETag. A file without a
  metadata file (dropped in by hand) is served as *foreign*: content type guessed from its
  name, no checksum, ETag from its size and mtime. Names starting with `.sidecar-` are the
  backend's own and hidden from listings.
- **Atomic writes**: an upload streams into `<root>/.sidecar-tmp.<random>` (same folder, so
  same filesystem), is fsynced, and is renamed (`os.replace`) into place only once all of it
  arrived and its checksum held; on any error, cancellation or deadline the temporary file is
  removed. Leftovers of a crash are removed when the backend is built.
- **Keys never leave the folder**: keys whose segments are empty, `.`, `..`, or start with
  `.sidecar-`, and keys with backslashes or NUL, are refused with INVALID_ARGUMENT; paths are
  walked one component at a time from a descriptor of the (resolved) root with
  `O_NOFOLLOW | O_DIRECTORY` (openat), so a symlink anywhere on the path, even one swapped in
  during the call, is refused (INVALID_ARGUMENT) and never followed.
- **Off the loop**: every disk call runs in a worker thread (the loop's executor), one chunk
  at a time, so memory stays at about a chunk per transfer whatever the object size; a
  cancelled call waits for its thread's step to finish before it cleans up.
- **Consistency**: renames into place and the opening of reads are serialized by one lock,
  so a reader never pairs a new data file with old metadata. One sidecar per folder.
- **Limits of a folder** (INVALID_ARGUMENT or FAILED_PRECONDITION where S3 would accept):
  a key cannot be both an object and a "folder" of others (`a` and `a/b`), and a key segment
  is at most 236 bytes (the file system's 255 minus the metadata file's affixes).
- **ETag**: the first 32 hex digits of the SHA-256 (stable per content); no presigned URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import mimetypes
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sidecar.backends.objectstore.base import (
    MAX_DELETE_KEYS,
    DeleteFailure,
    GetOptions,
    ObjectDownload,
    ObjectInfo,
    ObjectPage,
    PresignMethod,
    PutOptions,
    UploadBody,
    resolve_range,
)
from sidecar.backends.objectstore.paging import decode_page_token, encode_page_token
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config.services.objectstore import ObjectStoreServiceConfig
from sidecar.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)

__all__ = ["SPEC", "LocalFolderBackend"]

_T = TypeVar("_T")

_OWN: Final = ".sidecar-"
_META_PREFIX: Final = ".sidecar-meta."
_META_SUFFIX: Final = ".json"
_TMP_PREFIX: Final = ".sidecar-tmp."
_MAX_SEGMENT: Final = 255 - len(_META_PREFIX) - len(_META_SUFFIX)
_COPY_STEP: Final = 1024 * 1024
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


async def _off_loop(fn: Callable[[], _T], undo: Callable[[_T], object] | None = None) -> _T:
    """`fn()` in a worker thread. Cancelled meanwhile (once or many times), it still waits for
    the thread, so the caller's cleanup never races it, and hands what the thread made to
    `undo` (run in a thread too, and waited for) before re-raising the cancellation."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _settle(future)
        if undo is not None and not future.cancelled() and future.exception() is None:
            await _settle(loop.run_in_executor(None, undo, future.result()))
        raise


async def _settle(future: asyncio.Future[Any]) -> None:
    """Wait until a worker thread's step is over, whatever cancellations arrive meanwhile
    (the caller re-raises its own); its outcome is left for the caller to read."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait((future,))


def _invalid_key(key: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"key {key[:200]!r} {why}", reason="INVALID_REQUEST", metadata={"field": "key"}
    )


def _segments(key: str) -> list[str]:
    """The path segments of a key the folder can hold; InvalidArgument otherwise."""
    if "\x00" in key:
        raise _invalid_key(key, "contains NUL")
    if "\\" in key:
        raise _invalid_key(key, "contains a backslash")
    if key.startswith("/"):
        raise _invalid_key(key, "is an absolute path")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise _invalid_key(key, "has an empty, '.' or '..' segment (local folder)")
        if part.startswith(_OWN):
            raise _invalid_key(key, f"has a segment starting with {_OWN!r}, reserved")
        if len(part.encode("utf-8")) > _MAX_SEGMENT:
            raise _invalid_key(key, f"has a segment over {_MAX_SEGMENT} bytes (local folder)")
    return parts


def _meta_name(name: str) -> str:
    return f"{_META_PREFIX}{name}{_META_SUFFIX}"


def _symlink_refused(key: str) -> InvalidArgument:
    return _invalid_key(key, "runs through a symbolic link, which the local folder refuses")


def _not_found(key: str) -> NotFound:
    return NotFound(
        f"no object {key[:200]!r}", reason="UPSTREAM_NOT_FOUND", metadata={"key": key[:200]}
    )


def _conflict(key: str, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"key {key[:200]!r} {why}", reason="OPERATION_NOT_ALLOWED", metadata={"key": key[:200]}
    )


def _from_os_error(error: OSError, key: str) -> SidecarError:
    """A disk failure as a domain error: a full disk is RESOURCE_EXHAUSTED, a folder the
    sidecar may not write FAILED_PRECONDITION, a name the file system refuses
    INVALID_ARGUMENT, anything else (I/O errors, a vanished folder) UNAVAILABLE."""
    code = error.errno or 0
    text = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    metadata = {"key": key[:200], "errno": str(errno.errorcode.get(code, code))}
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ResourceExhausted(
            f"the object folder is full: {text}", reason="OVER_CAPACITY", metadata=metadata
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FailedPrecondition(
            f"the sidecar may not use the object folder: {text}",
            reason="OPERATION_NOT_ALLOWED",
            metadata=metadata,
        )
    if code in (errno.ENAMETOOLONG, errno.ELOOP, errno.EILSEQ):
        return _invalid_key(key, f"cannot be a file name here: {text}")
    return Unavailable(
        f"the object folder failed: {text}", reason="UPSTREAM_UNAVAILABLE", metadata=metadata
    )


@contextlib.contextmanager
def _disk_errors(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise _from_os_error(error, key) from None


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class _Meta:
    content_type: str
    metadata: Mapping[str, str]
    sha256: str
    size: int
    mtime_ns: int

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "content_type": self.content_type,
                "metadata": dict(self.metadata),
                "sha256": self.sha256,
                "size": self.size,
                "mtime_ns": self.mtime_ns,
            },
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def from_json(raw: bytes) -> _Meta | None:
        try:
            data = json.loads(raw)
            return _Meta(
                content_type=str(data["content_type"]),
                metadata={str(k): str(v) for k, v in dict(data["metadata"]).items()},
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                mtime_ns=int(data["mtime_ns"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _info(key: str, st: os.stat_result, meta: _Meta | None) -> ObjectInfo:
    """What a data file and its metadata file say of the object. A data file changed since
    the sidecar wrote it (another size or mtime) keeps its recorded SHA-256, so reading it
    whole ends in DATA_LOSS, but gets another ETag, so `if_match` sees the change."""
    if meta is not None:
        etag = meta.sha256[:32]
        if (meta.size, meta.mtime_ns) != (st.st_size, st.st_mtime_ns):
            changed = f"{meta.sha256}:{st.st_size}:{st.st_mtime_ns}".encode()
            etag = hashlib.md5(changed, usedforsecurity=False).hexdigest()
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=etag,
            last_modified=st.st_mtime,
            content_type=meta.content_type,
            metadata=dict(meta.metadata),
            sha256=meta.sha256,
        )
    foreign = hashlib.md5(f"{st.st_size}:{st.st_mtime_ns}".encode(), usedforsecurity=False)
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=foreign.hexdigest(),
        last_modified=st.st_mtime,
        content_type=mimetypes.guess_type(key)[0] or "application/octet-stream",
        metadata={},
        sha256="",
    )


def _read_meta(name: str, dir_fd: int) -> _Meta | None:
    try:
        fd = os.open(_meta_name(name), _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _Meta.from_json(os.read(fd, 64 * 1024))
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Folder:
    """Synchronous path work under the root descriptor; runs in worker threads only."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd

    def parents(self, key: str, parts: Sequence[str], *, create: bool) -> list[int]:
        """Descriptors of the root's copy (first) and of each parent folder of the key, walked
        without following symlinks; the caller closes all but the root's. A missing folder is
        NotFound (or made, with `create`); a symlink InvalidArgument; a file in the way NotFound
        (reads) or FailedPrecondition (writes)."""
        fds = [self.root_fd]
        try:
            for part in parts[:-1]:
                try:
                    fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
                    continue
                except FileNotFoundError:
                    if not create:
                        raise _not_found(key) from None
                except OSError as error:
                    if _is_symlink(part, fds[-1]):
                        raise _symlink_refused(key) from None
                    if error.errno == errno.ENOTDIR:
                        if create:
                            raise _conflict(key, "runs through an existing object") from None
                        raise _not_found(key) from None
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fds[-1])
                try:
                    fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
                except OSError:
                    if _is_symlink(part, fds[-1]):
                        raise _symlink_refused(key) from None
                    raise
            return fds
        except BaseException:
            self.release(fds)
            raise

    def release(self, fds: Sequence[int]) -> None:
        for fd in fds[1:]:
            os.close(fd)

    def open_object(self, key: str, parts: Sequence[str]) -> tuple[int, ObjectInfo]:
        """An open descriptor of the object's data file and its info; NotFound if missing."""
        fds = self.parents(key, parts, create=False)
        try:
            name, parent = parts[-1], fds[-1]
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                raise _not_found(key) from None
            except OSError:
                if _is_symlink(name, parent):
                    raise _symlink_refused(key) from None
                raise
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise _not_found(key)
                os.set_blocking(fd, True)
                return fd, _info(key, st, _read_meta(name, parent))
            except BaseException:
                os.close(fd)
                raise
        finally:
            self.release(fds)

    def new_temp(self) -> tuple[int, str]:
        name = f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        return os.open(name, _TMP_FLAGS, 0o644, dir_fd=self.root_fd), name

    def finish_temp(self, fd: int, meta: _Meta) -> tuple[_Meta, str]:
        """Fsync and close the data temp file; write, fsync and close its metadata temp file.
        Returns the metadata (size and mtime filled in) and the metadata temp file's name."""
        try:
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        filled = _Meta(meta.content_type, meta.metadata, meta.sha256, st.st_size, st.st_mtime_ns)
        meta_fd, meta_tmp = self.new_temp()
        try:
            _write_all(meta_fd, filled.to_json())
            os.fsync(meta_fd)
        except BaseException:
            os.close(meta_fd)
            self.remove_temp(meta_tmp)
            raise
        os.close(meta_fd)
        return filled, meta_tmp

    def remove_temp(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.root_fd)

    def commit(self, key: str, parts: Sequence[str], data_tmp: str, meta_tmp: str) -> None:
        """Rename both temp files into place (metadata first) and fsync the folder."""
        fds = self.parents(key, parts, create=True)
        try:
            name, parent = parts[-1], fds[-1]
            try:
                st = os.lstat(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise _symlink_refused(key)
                if stat.S_ISDIR(st.st_mode):
                    raise _conflict(key, "is a folder of other objects in the local folder")
            os.replace(meta_tmp, _meta_name(name), src_dir_fd=self.root_fd, dst_dir_fd=parent)
            os.replace(data_tmp, name, src_dir_fd=self.root_fd, dst_dir_fd=parent)
            os.fsync(parent)
        finally:
            self.release(fds)

    def delete(self, key: str, parts: Sequence[str]) -> None:
        """Remove the object and its metadata, then the folders it leaves empty."""
        try:
            fds = self.parents(key, parts, create=False)
        except NotFound:
            return
        try:
            name, parent = parts[-1], fds[-1]
            try:
                st = os.lstat(name, dir_fd=parent)
            except FileNotFoundError:
                return
            if stat.S_ISLNK(st.st_mode):
                raise _symlink_refused(key)
            if not stat.S_ISREG(st.st_mode):
                return
            os.unlink(name, dir_fd=parent)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_meta_name(name), dir_fd=parent)
            for depth in range(len(fds) - 1, 0, -1):
                try:
                    os.rmdir(parts[depth - 1], dir_fd=fds[depth - 1])
                except OSError:
                    break
        finally:
            self.release(fds)

    def sweep_temps(self) -> None:
        for entry in os.scandir(self.root_fd):
            if entry.name.startswith(_TMP_PREFIX):
                self.remove_temp(entry.name)

    # -- listing --------------------------------------------------------------------------

    def walk(
        self, fd: int, base: str, prefix: str, after: str, skip: list[str]
    ) -> Generator[tuple[str, int, str], None, None]:
        """(key, parent fd, name) of every object under folder `fd` (whose keys start with
        `base`) in lexicographic key order, those <= `after` and those starting with
        `skip[0]` (a common prefix already returned) left out; folders that cannot hold a
        wanted key are not entered."""
        entries: list[tuple[bytes, str, bool]] = []
        with os.scandir(fd) as scan:
            for entry in scan:
                name = entry.name
                if name.startswith(_OWN) or "\\" in name or _has_control(name):
                    continue
                try:
                    sort_key = name.encode("utf-8")
                except UnicodeEncodeError:  # a file name that is not UTF-8: no key names it
                    continue
                if entry.is_symlink():
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if not is_dir and not entry.is_file(follow_symlinks=False):
                    continue
                entries.append((sort_key + b"/" if is_dir else sort_key, name, is_dir))
        entries.sort()
        for _, name, is_dir in entries:
            key = base + name
            if is_dir:
                sub = key + "/"
                if not (sub.startswith(prefix) or prefix.startswith(sub)):
                    continue
                if sub < after and not after.startswith(sub):
                    continue
                if skip and sub.startswith(skip[0]):
                    continue
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    yield from self.walk(child, sub, prefix, after, skip)
                finally:
                    os.close(child)
            else:
                if not key.startswith(prefix) or key <= after:
                    continue
                if skip and key.startswith(skip[0]):
                    continue
                yield key, fd, name

    def page(self, prefix: str, delimiter: str, page_size: int, after: str) -> ObjectPage:
        """One page of a listing resuming after the entry `after` ("" for the first)."""
        skip: list[str] = []
        if delimiter and after.startswith(prefix) and after.endswith(delimiter):
            rest = after[len(prefix) :]
            if rest.find(delimiter) == len(rest) - len(delimiter):
                skip.append(after)  # the previous page ended on this common prefix
        walk = self.walk(self.root_fd, "", prefix, after, skip)
        with contextlib.closing(walk):
            return self._fill(walk, prefix, delimiter, page_size, skip)

    def _fill(
        self,
        walk: Iterator[tuple[str, int, str]],
        prefix: str,
        delimiter: str,
        page_size: int,
        skip: list[str],
    ) -> ObjectPage:
        """Up to `page_size` entries; `skip` is the walk's: a common prefix just returned
        makes it leave out every key under it."""
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last = ""
        for key, fd, name in walk:
            rest = key[len(prefix) :]
            cut = rest.find(delimiter) if delimiter else -1
            entry = prefix + rest[: cut + len(delimiter)] if cut >= 0 else key
            if len(objects) + len(prefixes) == page_size:
                return ObjectPage(objects, prefixes, last)
            if cut >= 0:
                prefixes.append(entry)
                skip[:] = [entry]
            else:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                objects.append(_info(key, st, _read_meta(name, fd)))
            last = entry
        return ObjectPage(objects, prefixes, "")


def _has_control(name: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)


@dataclass(slots=True)
class _Download:
    """An open data file; `chunks` reads it one chunk per step as the caller pulls."""

    info: ObjectInfo
    start: int
    length: int
    fd: int
    chunk_size: int

    async def chunks(self) -> AsyncIterator[bytes]:
        position, end = self.start, self.start + self.length
        while position < end:
            size = min(self.chunk_size, end - position)
            with _disk_errors(self.info.key):
                chunk = await _off_loop(functools.partial(os.pread, self.fd, size, position))
            if not chunk:  # the file shrank under us (written behind the sidecar's back)
                raise DataLoss(
                    f"object {self.info.key[:200]!r} ended early on disk",
                    reason="CHECKSUM_MISMATCH",
                    metadata={"key": self.info.key[:200]},
                )
            position += len(chunk)
            yield chunk


class LocalFolderBackend:
    """Objects as files under one folder (see the module docstring)."""

    def __init__(
        self, root: str, *, chunk_size: int = 256 * 1024, remove_at_close: bool = False
    ) -> None:
        self.root = os.path.realpath(root)
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        self._folder = _Folder(os.open(self.root, _DIR_FLAGS))
        self._folder.sweep_temps()
        self._chunk_size = chunk_size
        self._remove_at_close = remove_at_close
        self._lock = asyncio.Lock()
        self._closed = False

    def features(self) -> frozenset[str]:
        return frozenset()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the object store is closed", reason="BACKEND_CLOSED")

    async def put(self, key: str, body: UploadBody, options: PutOptions) -> ObjectInfo:
        self._check_open()
        parts = _segments(key)
        folder = self._folder
        with _disk_errors(key):
            fd, data_tmp = await _off_loop(folder.new_temp, lambda made: _drop(folder, *made))
        meta_tmp: str | None = None
        fd_open = True
        try:
            with _disk_errors(key):
                async for chunk in body:
                    await _off_loop(functools.partial(_write_all, fd, chunk))
                body.verify()
                meta = _Meta(options.content_type, dict(options.metadata), body.sha256(), 0, 0)
                fd_open = False  # finish_temp closes it, whatever happens
                meta, meta_name = await _off_loop(
                    functools.partial(folder.finish_temp, fd, meta),
                    lambda made: folder.remove_temp(made[1]),
                )
                meta_tmp = meta_name
                async with self._lock:
                    await _off_loop(
                        functools.partial(folder.commit, key, parts, data_tmp, meta_name)
                    )
            return ObjectInfo(
                key=key,
                size=meta.size,
                etag=meta.sha256[:32],
                last_modified=meta.mtime_ns / 1e9,
                content_type=meta.content_type,
                metadata=dict(meta.metadata),
                sha256=meta.sha256,
            )
        finally:
            await _off_loop(
                functools.partial(_cleanup, folder, fd if fd_open else None, data_tmp, meta_tmp)
            )

    @contextlib.asynccontextmanager
    async def _open(self, key: str, options: GetOptions) -> AsyncIterator[ObjectDownload]:
        self._check_open()
        parts = _segments(key)
        async with self._lock:
            with _disk_errors(key):
                fd, info = await _off_loop(
                    functools.partial(self._folder.open_object, key, parts),
                    lambda made: os.close(made[0]),
                )
        try:
            if options.if_match is not None and options.if_match != info.etag:
                raise FailedPrecondition(
                    f"object {key[:200]!r} has ETag {info.etag}, not {options.if_match[:80]}",
                    reason="UPSTREAM_CONDITION_FAILED",
                    metadata={"key": key[:200], "etag": info.etag},
                )
            start, length = resolve_range(options.range, info.size)
            yield _Download(info, start, length, fd, self._chunk_size)
        finally:
            await _off_loop(functools.partial(os.close, fd))

    def get(
        self, key: str, options: GetOptions
    ) -> contextlib.AbstractAsyncContextManager[ObjectDownload]:
        return self._open(key, options)

    async def head(self, key: str) -> ObjectInfo:
        async with self._open(key, GetOptions()) as download:
            return download.info

    async def list(
        self, prefix: str, delimiter: str, page_size: int, page_token: str
    ) -> ObjectPage:
        self._check_open()
        after = decode_page_token(page_token, prefix, delimiter)
        async with self._lock:
            with _disk_errors(prefix):
                page = await _off_loop(
                    functools.partial(self._folder.page, prefix, delimiter, page_size, after)
                )
        token = encode_page_token(page.next_page_token, prefix, delimiter)
        return ObjectPage(page.objects, page.common_prefixes, token)

    async def delete(self, keys: Sequence[str]) -> Sequence[DeleteFailure]:
        self._check_open()
        if len(keys) > MAX_DELETE_KEYS:
            raise InvalidArgument(
                f"{len(keys)} keys; the limit is {MAX_DELETE_KEYS}",
                reason="INVALID_REQUEST",
                metadata={"field": "keys"},
            )
        checked = [(key, _segments(key)) for key in keys]
        failures: list[DeleteFailure] = []
        for key, parts in checked:
            async with self._lock:
                try:
                    await _off_loop(functools.partial(self._folder.delete, key, parts))
                except InvalidArgument as error:
                    failures.append(DeleteFailure(key, "InvalidKey", error.message))
                except OSError as error:
                    failures.append(DeleteFailure(key, "IOError", os.strerror(error.errno or 0)))
        return failures

    async def copy(self, source_key: str, destination_key: str) -> ObjectInfo:
        self._check_open()
        _segments(destination_key)
        async with self.get(source_key, GetOptions()) as download:
            info = download.info
            body = UploadBody(
                download.chunks(),
                declared_sha256=info.sha256 or None,
                max_object_size=max(info.size, 1),
            )
            try:
                return await self.put(
                    destination_key, body, PutOptions(info.content_type, info.metadata)
                )
            except InvalidArgument as error:
                if error.reason != "CHECKSUM_MISMATCH":
                    raise
                raise DataLoss(
                    f"object {source_key[:200]!r} does not match its recorded sha256; "
                    "nothing was copied",
                    reason="CHECKSUM_MISMATCH",
                    metadata={"key": source_key[:200]},
                ) from None

    async def presign(
        self, key: str, method: PresignMethod, expires_in: float, content_type: str
    ) -> str:
        raise FailedPrecondition(
            "the local folder object store cannot presign URLs",
            reason="UNSUPPORTED_OPERATION",
        )

    async def ping(self) -> None:
        self._check_open()
        ok = await _off_loop(functools.partial(os.access, self.root, os.W_OK))
        if not ok:
            raise Unavailable(
                f"the object folder {self.root} is not writable",
                reason="UPSTREAM_UNAVAILABLE",
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            await _off_loop(functools.partial(os.close, self._folder.root_fd))
            if self._remove_at_close:
                await _off_loop(functools.partial(shutil.rmtree, self.root, True))


def _drop(folder: _Folder, fd: int, name: str) -> None:
    os.close(fd)
    folder.remove_temp(name)


def _cleanup(folder: _Folder, fd: int | None, data_tmp: str, meta_tmp: str | None) -> None:
    """After a put, whatever happened: no descriptor and no temporary file left behind (after
    a commit the names are gone already)."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    folder.remove_temp(data_tmp)
    if meta_tmp is not None:
        folder.remove_temp(meta_tmp)


def _build(context: BuildContext[ObjectStoreServiceConfig]) -> LocalFolderBackend:
    settings = context.settings
    if settings.root is None:
        root = tempfile.mkdtemp(prefix=f"sidecar-objects-{context.name}-")
        return LocalFolderBackend(root, chunk_size=settings.chunk_size, remove_at_close=True)
    return LocalFolderBackend(settings.root, chunk_size=settings.chunk_size)


SPEC = BackendSpec(
    type="objectstore",
    backend="local",
    settings=ObjectStoreServiceConfig,
    build=_build,
    features=frozenset(),
)
