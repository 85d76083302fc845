"""`ObjectStoreServiceConfig`: an object store (`type: objectstore`), served by
ObjectStoreService.

A folder on disk, the embedded default (no `root`: a private temporary folder made at start-up
and removed at exit):

    services:
      uploads:
        type: objectstore
        backend: local
        root: /var/lib/app/objects

An S3 bucket, on an aws connection: a `connections:` entry of `type: aws`, or a `type: cloud`
service (whose inline region and credentials make a connection named like it). There are no
region or credential settings here: the connection has them.

    services:
      aws: {type: cloud, region: eu-west-1, credentials: {...}}
      media:
        type: objectstore
        backend: s3
        connection: aws
        bucket: media-prod
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .._common import ServiceName
from .._units import Bytes, DurationSeconds, GiB, KiB, MiB
from .base import ServiceBase, backend_settings_hold

__all__ = ["ObjectStoreServiceConfig"]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_ONLY = ("bucket", "connection", "part_size", "max_concurrent_parts")
_LOCAL_ONLY = ("root",)
_WEEK = 7 * 24 * 3600.0


class ObjectStoreServiceConfig(ServiceBase):
    """An object store (ObjectStoreService): a local folder or an S3 bucket."""

    type: Literal["objectstore"] = Field(default="objectstore", description="Service type.")
    backend: str = Field(
        default="local",
        description="local: files in a folder on this machine; s3: an S3 bucket through an "
        "aws connection. Default local.",
    )
    root: str | None = Field(
        default=None,
        min_length=1,
        description="The folder holding the objects (backend: local); made if missing. "
        "Default null: a private temporary folder made at start-up and removed at exit.",
    )
    bucket: str | None = Field(
        default=None,
        description="The S3 bucket every call of this service works in (backend: s3, required).",
    )
    connection: ServiceName | None = Field(
        default=None,
        description="The aws connection to use (backend: s3, required): a connections: entry "
        "of type aws, or a type: cloud service.",
    )
    part_size: Bytes = Field(
        default=8 * MiB,
        ge=5 * MiB,
        le=5 * GiB,
        description="Uploads larger than this go to S3 as a multipart upload of parts this "
        "size (5MiB-5GiB; backend: s3). Default 8MiB.",
    )
    max_concurrent_parts: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Parts of one multipart upload in flight at once (1-32; backend: s3); "
        "the memory one upload holds is about part_size x (this + 1), so the default keeps "
        "a 200 MB transfer's growth of a sidecar under 64 MB. Default 2.",
    )
    max_object_size: Bytes = Field(
        default=5 * GiB,
        le=5 * 1024 * GiB,
        description="Largest object PutObject accepts; more bytes fail with INVALID_ARGUMENT "
        "(VALUE_TOO_LARGE) and nothing is stored (at most 5TiB, S3's limit). Default 5GiB.",
    )
    chunk_size: Bytes = Field(
        default=256 * KiB,
        ge=1 * KiB,
        le=2 * MiB,
        description="Bytes per GetObject data message (1KiB-2MiB). Default 256KiB.",
    )
    max_keys_per_page: int = Field(
        default=1000,
        ge=1,
        le=1000,
        description="Most entries (objects plus common prefixes) one ListObjects page returns "
        "(1-1000); a larger page_size is lowered to it. Default 1000.",
    )
    stream_idle_timeout: DurationSeconds = Field(
        default=30.0,
        description="A PutObject whose caller sends no message, or a GetObject whose reader "
        "takes no message, for this long ends with ABORTED (STREAM_IDLE_TIMEOUT), freeing "
        "its file or S3 connection; an upload cut off stores nothing. Default 30s.",
    )
    presign_max_expiry: DurationSeconds = Field(
        default=_WEEK,
        ge=1.0,
        le=_WEEK,
        description="Longest expiry PresignUrl signs (1s-7d, S3's limit; backend: s3). Default 7d.",
    )

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and (not _BUCKET.fullmatch(value) or ".." in value):
            raise PydanticCustomError(
                "bucket_name",
                "{bucket} is not an S3 bucket name (3-63 lower-case letters, digits, dots "
                "and hyphens, starting and ending with a letter or digit)",
                {"bucket": repr(value)},
            )
        return value

    @model_validator(mode="after")
    def _settings_match_backend(self) -> ObjectStoreServiceConfig:
        backend_settings_hold(
            self,
            self.backend,
            {"s3": _S3_ONLY, "local": _LOCAL_ONLY},
            required=("connection", "bucket") if self.backend == "s3" else (),
            why="connection names an aws connection (a connections: entry of type aws, or a "
            "type: cloud service), bucket the bucket",
        )
        return self
