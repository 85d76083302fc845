"""The object-store capability: domain values, `UploadBody` and the `ObjectStoreBackend`
protocol. The backends, `local.LocalFolderBackend` (a folder on disk) and
`s3.S3Backend` (an S3 bucket over an aws connection), are imported by the registry only when
configured, so their libraries load only then.
"""

from sidecar.backends.objectstore.base import (
    MAX_DELETE_KEYS,
    MAX_KEY_BYTES,
    MAX_METADATA_BYTES,
    MAX_METADATA_ENTRIES,
    PRESIGN,
    SHA256_METADATA_KEY,
    ByteRange,
    DeleteFailure,
    GetOptions,
    ObjectDownload,
    ObjectInfo,
    ObjectPage,
    ObjectStoreBackend,
    PresignMethod,
    PutOptions,
    UploadBody,
    check_key,
    check_metadata,
    check_sha256,
    resolve_range,
)

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
