"""Helpers of the S3 object-store tests (imported as `aws.objectstore.s3_helpers`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from aws_server import FAKE_KEY, FAKE_SECRET, MotoServer

from sidecar.backends.objectstore.base import UploadBody
from sidecar.backends.objectstore.s3 import S3Backend

MiB = 1024 * 1024

StoreMaker = Callable[..., S3Backend]
"""The `make_store` fixture: `make_store(**settings)` builds an S3 backend on the test's
bucket."""


def connection_section(server: MotoServer | str) -> str:
    """The YAML flow mapping of an aws connection to `server` (or to the URL given, say a
    proxy's in front of it), with path-style addressing."""
    url = server if isinstance(server, str) else server.url
    return (
        f"{{type: aws, region: us-east-1, endpoint_url: {url}, addressing_style: path, "
        f"credentials: {{access_key_id: {FAKE_KEY}, secret_access_key: {FAKE_SECRET}}}}}"
    )


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def chunks(data: bytes, size: int = MiB) -> AsyncIterator[bytes]:
    """`data` in chunks of `size` bytes, as a client's stream would bring it."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def upload_body(
    source: AsyncIterator[bytes], sha256: str | None = None, *, max_size: int = 1 << 40
) -> UploadBody:
    """The body of a put, as the servicer makes it from a request stream."""
    return UploadBody(source, declared_sha256=sha256, max_object_size=max_size)


async def open_uploads(s3: Any, bucket: str) -> list[str]:
    """The keys of the bucket's multipart uploads that were neither completed nor aborted."""
    answer = await s3.list_multipart_uploads(Bucket=bucket)
    return [upload["Key"] for upload in answer.get("Uploads", ())]
