"""`MappedPart`: the buffer of one multipart part, in an anonymous memory map.

Why not a plain `io.BytesIO` (or bytes): a part is several MiB, allocated and freed for every
part. Through malloc, freeing a block that large raises glibc's dynamic mmap threshold to its
size, after which every smaller large block (the gRPC messages the parts are made of, 1-2 MiB
each, four copies of each on their way in) comes from the heap instead of its own mapping, and
the heap fragments: a 200 MB upload raised the sidecar's peak RSS by about 45 MB more than its
parts account for. A memory map is returned to the system when the part is sent and never
touches malloc's bookkeeping.

It subclasses `io.BytesIO` only so that botocore takes it as a file-like body and aiohttp
sends it with its BytesIO payload: in 64 KiB slices of `getbuffer()` with a drain between
them, so the bytes are not copied again on the way out. Every method botocore and aiohttp use
(read, seek, tell, getbuffer, close, ...) is served from the map; the BytesIO underneath stays
empty.
"""

from __future__ import annotations

import contextlib
import io
import mmap
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["MappedPart"]

_SEEK_SET: Final = io.SEEK_SET
_SEEK_CUR: Final = io.SEEK_CUR
_SEEK_END: Final = io.SEEK_END


class MappedPart(io.BytesIO):
    """Up to `capacity` bytes, written once (`append`), then read as a file."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._map = mmap.mmap(-1, max(capacity, 1))
        self._length = 0
        self._position = 0

    def append(self, data: Buffer) -> None:
        """Add bytes at the end (the writing phase; the position stays where it is)."""
        view = memoryview(data)
        end = self._length + view.nbytes
        self._map[self._length : end] = view
        self._length = end

    def __len__(self) -> int:
        return self._length

    def read(self, size: int | None = -1, /) -> bytes:
        self._check_open()
        start = self._position
        end = self._length if size is None or size < 0 else min(start + size, self._length)
        if end <= start:
            return b""
        self._position = end
        return self._map[start:end]

    def read1(self, size: int | None = -1, /) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Buffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(view.nbytes)
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = _SEEK_SET, /) -> int:
        self._check_open()
        base = {_SEEK_SET: 0, _SEEK_CUR: self._position, _SEEK_END: self._length}[whence]
        position = base + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def tell(self) -> int:
        self._check_open()
        return self._position

    def getbuffer(self) -> memoryview:
        self._check_open()
        return memoryview(self._map)[: self._length]

    def getvalue(self) -> bytes:
        self._check_open()
        return self._map[: self._length]

    def write(self, data: Buffer, /) -> int:
        raise io.UnsupportedOperation("a MappedPart is filled with append()")

    def truncate(self, size: int | None = None, /) -> int:
        raise io.UnsupportedOperation("a MappedPart cannot be truncated")

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        """Unmap the bytes (idempotent). A buffer still exported (a `getbuffer()` view not
        released yet) keeps the map alive until it goes; the map is freed with it."""
        if not self._map.closed:
            with contextlib.suppress(BufferError):  # freed when the last view goes
                self._map.close()
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
