"""The cache capability: the `CacheBackend` protocol, its domain types, and its backends."""

from sidecar.backends.cache.base import (
    MISS,
    CacheBackend,
    CacheOp,
    DeleteOp,
    ExistsOp,
    ExpireOp,
    GetOp,
    IncrementOp,
    ListEnd,
    OpResult,
    SetCondition,
    SetOp,
    check_ttl,
    run_batch_sequentially,
)
from sidecar.backends.cache.memory import MemoryCache

__all__ = [
    "MISS",
    "CacheBackend",
    "CacheOp",
    "DeleteOp",
    "ExistsOp",
    "ExpireOp",
    "GetOp",
    "IncrementOp",
    "ListEnd",
    "MemoryCache",
    "OpResult",
    "SetCondition",
    "SetOp",
    "check_ttl",
    "run_batch_sequentially",
]
