"""The object-store capability: domain values, the `UploadBody` an upload streams through, and
the `ObjectStoreBackend` protocol every backend (local folder, S3) implements.

A backend knows nothing of gRPC: it receives validated keys (`check_key`), an `UploadBody`
that hashes the caller's bytes as they pass and enforces the size bound, and returns plain
values. It raises only `sidecar.errors` types; a missing key is `NotFound` with reason
UPSTREAM_NOT_FOUND whatever the store (the aws connection's mapping answers NoSuchKey so).

Usage:

    body = UploadBody(chunks, declared_sha256=None, max_object_size=5 * GIB)
    info = await backend.put("reports/2026/q1.pdf", body, PutOptions("application/pdf"))
    async with backend.get(info.key, GetOptions(range=ByteRange(0, 1023))) as download:
        async for chunk in download.chunks():
            send(chunk)

The SHA-256 of every object is recorded with it at upload (S3: the user metadata entry
`sha256`, hidden from `ObjectInfo.metadata`), so a reader can check the bytes it got.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from sidecar.errors import InvalidArgument

__all__ = [
    "MAX_DELETE_KEYS",
    "MAX_KEY_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_ENTRIES",
    "PRESIGN",
    "SHA256_METADATA_KEY",
    "ByteRange",
    "DeleteFailure",
    "GetOptions",
    "ObjectDownload",
    "ObjectInfo",
    "ObjectPage",
    "ObjectStoreBackend",
    "PresignMethod",
    "PutOptions",
    "UploadBody",
    "check_key",
    "check_metadata",
    "check_sha256",
    "resolve_range",
]

MAX_KEY_BYTES: Final = 1024
"""S3's own limit on a key's UTF-8 length."""
MAX_DELETE_KEYS: Final = 1000
"""S3's DeleteObjects limit, kept for every backend."""
MAX_METADATA_ENTRIES: Final = 32
MAX_METADATA_BYTES: Final = 2000
"""User metadata, names plus values in UTF-8: under S3's 2 KiB header budget, leaving room
for the sidecar's own `sha256` entry."""
SHA256_METADATA_KEY: Final = "sha256"
"""The user-metadata entry a store keeps the sidecar's SHA-256 in; callers may not set it."""
PRESIGN: Final = "presign"
"""The feature of a backend that can sign URLs (S3); the local folder has none."""

PresignMethod = Literal["GET", "PUT"]

_METADATA_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _invalid(field_name: str, message: str, reason: str = "INVALID_REQUEST") -> InvalidArgument:
    return InvalidArgument(f"{field_name} {message}", reason=reason, metadata={"field": field_name})


def check_key(key: str, field_name: str = "key") -> str:
    """The key unchanged when every store can hold it: 1..1024 bytes of UTF-8 without NUL or
    other control characters; InvalidArgument (INVALID_REQUEST) otherwise. Backends may
    refuse more (the local folder refuses what could leave its folder)."""
    if not key:
        raise _invalid(field_name, "must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        raise _invalid(field_name, "is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise _invalid(field_name, f"is {size} bytes; the limit is {MAX_KEY_BYTES}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise _invalid(field_name, "must not contain NUL or other control characters")
    return key


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata every store can keep: at most 32 entries, names of lower-case letters,
    digits, `.`, `_`, `-` (S3 lower-cases names), values of printable ASCII (HTTP headers),
    2,000 bytes in all, and not the reserved `sha256` name."""
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise _invalid(
            "metadata", f"has {len(metadata)} entries; the limit is {MAX_METADATA_ENTRIES}"
        )
    total = 0
    for name, value in metadata.items():
        if not _METADATA_NAME.fullmatch(name):
            raise _invalid("metadata", f"name {name[:64]!r} must be 1..128 of [a-z0-9._-]")
        if name == SHA256_METADATA_KEY:
            raise _invalid("metadata", f"name {name!r} is reserved for the sidecar's checksum")
        if any(not (0x20 <= ord(c) < 0x7F) for c in value):
            raise _invalid("metadata", f"value of {name!r} must be printable ASCII")
        total += len(name) + len(value)
    if total > MAX_METADATA_BYTES:
        raise _invalid(
            "metadata", f"is {total} bytes; the limit is {MAX_METADATA_BYTES}", "VALUE_TOO_LARGE"
        )
    return dict(metadata)


def check_sha256(value: str, field_name: str = "sha256") -> str | None:
    """A declared SHA-256 in lower-case hex, None for ""; InvalidArgument when malformed."""
    if not value:
        return None
    lowered = value.lower()
    if not _SHA256_HEX.fullmatch(lowered):
        raise _invalid(field_name, "must be 64 hexadecimal digits")
    return lowered


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object, as a listing, a head, a put or the first message of a get reports it."""

    key: str
    size: int
    etag: str
    """As the store reports it, without quotes."""
    last_modified: float
    """Epoch seconds."""
    content_type: str
    """"" when the store did not say (listings)."""
    metadata: Mapping[str, str]
    """User metadata, without the sidecar's own checksum entry."""
    sha256: str
    """Hex SHA-256 of the whole object; "" when not recorded (listings, foreign objects)."""


class UploadBody:
    """The bytes of one upload as they arrive from the caller, hashed as they pass.

    Iterate it once; it pulls one chunk from the caller per chunk the backend asks for, so a
    slow store slows the caller (back-pressure) and nothing is read ahead. `verify()` after
    the last chunk and BEFORE committing (rename / PutObject / CompleteMultipartUpload):
    it raises InvalidArgument (CHECKSUM_MISMATCH) when the caller declared a SHA-256 that
    differs. More than `max_object_size` bytes raise InvalidArgument (VALUE_TOO_LARGE) as
    soon as they arrive, before the chunk over the bound reaches the store.
    """

    __slots__ = (
        "_chunks",
        "_done",
        "_hash",
        "_size",
        "_started",
        "declared_sha256",
        "max_object_size",
    )

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        declared_sha256: str | None = None,
        max_object_size: int,
    ) -> None:
        self.declared_sha256 = declared_sha256
        self.max_object_size = max_object_size
        self._chunks = chunks
        self._hash = hashlib.sha256()
        self._size = 0
        self._started = False
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._started:
            raise RuntimeError("an UploadBody can be iterated only once")
        self._started = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if not chunk:
                continue
            self._size += len(chunk)
            if self._size > self.max_object_size:
                raise _invalid(
                    "data",
                    f"exceeds the object size limit of {self.max_object_size} bytes",
                    "VALUE_TOO_LARGE",
                )
            self._hash.update(chunk)  # ~0.5 ms per MiB: fine on the loop, chunk by chunk
            yield chunk
        self._done = True

    def sha256(self) -> str:
        """Hex SHA-256 of every byte iterated so far."""
        return self._hash.hexdigest()

    def size(self) -> int:
        """Bytes iterated so far."""
        return self._size

    @property
    def complete(self) -> bool:
        """True once the caller's last chunk went through."""
        return self._done

    def verify(self) -> None:
        """Raise InvalidArgument (CHECKSUM_MISMATCH) when a declared SHA-256 differs from the
        bytes received; call it after the last chunk and before committing."""
        if not self._done:
            raise RuntimeError("verify() before the body was read to its end")
        if self.declared_sha256 is not None and self.declared_sha256 != self.sha256():
            raise InvalidArgument(
                "the uploaded bytes do not match the declared sha256; nothing was stored",
                reason="CHECKSUM_MISMATCH",
                metadata={"field": "sha256", "computed_sha256": self.sha256()},
            )


@dataclass(frozen=True, slots=True)
class PutOptions:
    content_type: str = "application/octet-stream"
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start`..`end` of an object, both inclusive (HTTP Range semantics); `end` None:
    to the end of the object. An `end` past the object's end is clamped to it."""

    start: int
    end: int | None = None


def resolve_range(byte_range: ByteRange | None, size: int) -> tuple[int, int]:
    """(first byte, length) of `byte_range` within an object of `size` bytes; the whole object
    for None. A range starting at or past the end is InvalidArgument (INVALID_REQUEST, field
    `range`), like S3's 416 InvalidRange (which its mapping answers as InvalidArgument too)."""
    if byte_range is None:
        return 0, size
    if byte_range.start >= size:
        raise _invalid("range", f"starts at byte {byte_range.start} of a {size}-byte object")
    last = size - 1 if byte_range.end is None else min(byte_range.end, size - 1)
    return byte_range.start, last - byte_range.start + 1


@dataclass(frozen=True, slots=True)
class GetOptions:
    range: ByteRange | None = None
    if_match: str | None = None
    """An ETag (without quotes): a different current ETag is FailedPrecondition
    (UPSTREAM_CONDITION_FAILED)."""


class ObjectDownload(Protocol):
    """An open read of one object; its `chunks()` pull from the store as the caller reads."""

    @property
    def info(self) -> ObjectInfo:
        """Of the whole object."""

    @property
    def start(self) -> int:
        """The first byte of what `chunks` yields."""

    @property
    def length(self) -> int:
        """How many bytes `chunks` yields."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The bytes, in chunks of at most the backend's `chunk_size`, read from the store
        only as they are asked for (back-pressure)."""


@dataclass(frozen=True, slots=True)
class ObjectPage:
    objects: Sequence[ObjectInfo]
    common_prefixes: Sequence[str]
    next_page_token: str
    """"" on the last page."""


@dataclass(frozen=True, slots=True)
class DeleteFailure:
    key: str
    code: str
    """The store's error code (AccessDenied, ...)."""
    message: str


class ObjectStoreBackend(Protocol):
    """One bucket (or folder) of objects."""

    async def put(self, key: str, body: UploadBody, options: PutOptions) -> ObjectInfo:
        """Store the body under `key`, replacing any object there, only once all of it arrived
        and `body.verify()` passed; records `body.sha256()` with it. On ANY exception or
        cancellation nothing is stored and nothing is left behind (temporary file, multipart
        upload), then the exception propagates."""
        ...

    def get(self, key: str, options: GetOptions) -> AbstractAsyncContextManager[ObjectDownload]:
        """Open a read; leaving the context releases the store's stream or file whatever
        happened. NotFound (UPSTREAM_NOT_FOUND) for a missing key."""
        ...

    async def head(self, key: str) -> ObjectInfo: ...

    async def list(
        self, prefix: str, delimiter: str, page_size: int, page_token: str
    ) -> ObjectPage:
        """Keys starting with `prefix` in lexicographic (UTF-8 byte) order; with a delimiter,
        keys with it after the prefix roll up into common prefixes (S3 semantics). The
        token is opaque and validated (InvalidArgument when it is not one of ours)."""
        ...

    async def delete(self, keys: Sequence[str]) -> Sequence[DeleteFailure]:
        """Delete up to 1000 keys; a missing key is not a failure (S3 semantics)."""
        ...

    async def copy(self, source_key: str, destination_key: str) -> ObjectInfo:
        """Copy within the store, content type, user metadata and checksum included."""
        ...

    async def presign(
        self, key: str, method: PresignMethod, expires_in: float, content_type: str
    ) -> str:
        """Only backends with the PRESIGN feature are asked."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
