"""The cache capability: domain types, the `CacheBackend` protocol and the default batch.

The model is Redis's, so that a Redis backend can honour every promise made here: a key holds
one of four types (a string of bytes, a hash of field -> bytes, a list of bytes, a set of
bytes), any key may carry a TTL, and an operation on a key of another type fails with
`FailedPrecondition(reason="WRONG_TYPE")` (Redis `WRONGTYPE`). Empty hashes, lists and sets do
not exist: removing their last element removes the key.

Usage:

    cache: CacheBackend = MemoryCache()
    await cache.set("user:1", b"ada", ttl=30.0)
    await cache.increment("hits", 1)
    results = await cache.batch([GetOp("user:1"), IncrementOp("hits", 1)], atomic=True)

Input validation (empty keys, sizes) belongs to the servicer. Backends only refuse what would
corrupt their own state: a TTL must be a finite number of seconds > 0 (`ValueError`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias, assert_never, runtime_checkable

from sidecar.errors import FailedPrecondition

__all__ = [
    "CACHE_FAMILIES",
    "INT64_MAX",
    "INT64_MIN",
    "CacheBackend",
    "CacheOp",
    "DeleteOp",
    "ExistsOp",
    "ExpireOp",
    "GetOp",
    "HashFamily",
    "IncrementOp",
    "ListEnd",
    "ListFamily",
    "OpResult",
    "SetCondition",
    "SetFamily",
    "SetOp",
    "check_ttl",
    "family_features",
    "hashes_of",
    "lists_of",
    "run_batch_sequentially",
    "sets_of",
]


INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""The range of a counter, as Redis INCRBY enforces it."""


class SetCondition(enum.Enum):
    """When `set` applies: always, only if the key is missing (NX), only if it exists (XX)."""

    ALWAYS = "ALWAYS"
    IF_ABSENT = "IF_ABSENT"
    IF_PRESENT = "IF_PRESENT"


class ListEnd(enum.Enum):
    """The end of a list an element is pushed to or popped from (Redis L*/R* commands)."""

    LEFT = "LEFT"
    RIGHT = "RIGHT"


def check_ttl(ttl: float) -> float:
    """Return `ttl` if it is a finite number of seconds > 0, else raise `ValueError`."""
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    return ttl


@dataclass(frozen=True, slots=True)
class GetOp:
    """Read a string key; result `bytes | None`."""

    key: str


@dataclass(frozen=True, slots=True)
class SetOp:
    """Write a string key; result `bool` (whether the condition let it apply)."""

    key: str
    value: bytes
    ttl: float | None = None
    condition: SetCondition = SetCondition.ALWAYS

    def __post_init__(self) -> None:
        if self.ttl is not None:
            check_ttl(self.ttl)


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Delete keys of any type; result `int` (how many existed)."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExistsOp:
    """Whether a key of any type exists; result `bool`."""

    key: str


@dataclass(frozen=True, slots=True)
class IncrementOp:
    """Add `delta` to an integer string key; result `int` (the new value)."""

    key: str
    delta: int


@dataclass(frozen=True, slots=True)
class ExpireOp:
    """Give a key of any type a TTL; result `bool` (False if the key is missing)."""

    key: str
    ttl: float

    def __post_init__(self) -> None:
        check_ttl(self.ttl)


CacheOp: TypeAlias = GetOp | SetOp | DeleteOp | ExistsOp | IncrementOp | ExpireOp
OpResult: TypeAlias = bytes | bool | int | None


class Miss:
    """The type of `MISS`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


MISS: Final = Miss()
"""A near cache holds no copy of the key: the value must be read from the backend (None
would be a held "no such key")."""


class CacheBackend(Protocol):
    """A key-value cache with Redis semantics.

    Every method may raise `Unavailable` (backend unreachable or closed). Methods that read or
    write one type raise `FailedPrecondition(reason="WRONG_TYPE")` when the key holds another
    type. A key past its TTL is gone for every method. TTLs are seconds (floats; a Redis
    backend rounds them to milliseconds).
    """

    def get(self, key: str) -> Awaitable[bytes | None]:
        """The string at `key`, or None if the key is missing. A backend that holds the value
        in memory may answer with an `Answered`: no upstream call, so no policy runs."""
        ...

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        condition: SetCondition = SetCondition.ALWAYS,
    ) -> bool:
        """Store a string, replacing a key of any type; return whether it was applied.

        Like Redis `SET`, an applied set without `ttl` leaves the key with no expiry.
        """
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Delete keys of any type; return how many existed."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether `key` holds a value of any type."""
        ...

    async def expire(self, key: str, ttl: float) -> bool:
        """Make `key` expire `ttl` seconds from now; False if the key is missing."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires; None if it has no expiry or is missing."""
        ...

    async def increment(self, key: str, delta: int) -> int:
        """Add `delta` to the integer string at `key` (missing counts as 0); return the sum.

        The key's TTL is kept. Raises `FailedPrecondition` with reason `NOT_AN_INTEGER` if
        the value is not the decimal form of an int64, `INTEGER_OVERFLOW` if the result
        leaves the int64 range (nothing is changed then).
        """
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The strings at `keys`, in order; None for a missing key or one of another type."""
        ...

    async def set_many(
        self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None
    ) -> None:
        """Store every (key, value) string; all or none. A repeated key keeps its last value."""
        ...

    async def batch(self, ops: Sequence[CacheOp], *, atomic: bool) -> list[OpResult]:
        """Run `ops` in order and return one result per op (see each op's docstring).

        `atomic=True`: all or nothing. If an op fails, no change of the batch remains and the
        error is raised; no other client sees a partial batch. (A Redis backend keeps this
        promise with a Lua script that checks types and integers before writing, since a
        plain MULTI/EXEC does not roll back.)

        `atomic=False`: ops are applied one by one, as by `run_batch_sequentially`. If one
        fails its error is raised; the ops before it stay applied, and whether the ops after
        it ran is unspecified (a pipelining backend sends them all at once).
        """
        ...

    async def ping(self) -> None:
        """Return if the backend can serve requests, else raise `Unavailable`."""
        ...

    async def close(self) -> None:
        """Release the backend's resources; idempotent. Later calls raise `Unavailable`."""
        ...

    def features(self) -> frozenset[str]:
        """What this instance can do beyond the core and the families it implements (say
        `near_cache`); AdminService lists them with the families."""
        ...


# Optional families: a backend implements those it can, and the servicer finds them with
# isinstance, as it finds `ReliablePubSub` on a broker. An RPC of a family the target's
# backend lacks answers FAILED_PRECONDITION with reason UNSUPPORTED_OPERATION.


@runtime_checkable
class HashFamily(Protocol):
    """Hashes: fields of byte values under one key."""

    async def hash_get(self, key: str, field: str) -> bytes | None:
        """One field of the hash at `key`; None if the key or the field is missing."""
        ...

    async def hash_set(self, key: str, fields: Mapping[str, bytes]) -> int:
        """Set fields of the hash at `key` (created if missing); return how many were new.

        An empty mapping changes nothing and returns 0.
        """
        ...

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        """Every field of the hash at `key`; empty if the key is missing."""
        ...


@runtime_checkable
class ListFamily(Protocol):
    """Lists: byte values pushed and popped at either end."""

    async def list_push(self, key: str, values: Sequence[bytes], end: ListEnd) -> int:
        """Push `values` one by one onto `end` of the list at `key`; return its new length.

        As with Redis `LPUSH a b c`, pushing several values to the left leaves them reversed
        (`c b a ...`). No values changes nothing and returns the current length.
        """
        ...

    async def list_pop(self, key: str, end: ListEnd, count: int = 1) -> list[bytes]:
        """Pop up to `count` (>= 1) values from `end` of the list at `key`, in popped order."""
        ...


@runtime_checkable
class SetFamily(Protocol):
    """Sets: distinct byte members."""

    async def set_add(self, key: str, members: Sequence[bytes]) -> int:
        """Add members to the set at `key`; return how many were new (none: returns 0)."""
        ...

    async def set_members(self, key: str) -> list[bytes]:
        """Every member of the set at `key`, sorted (bytewise) so results are deterministic."""
        ...


CACHE_FAMILIES: Mapping[str, type] = {
    "hashes": HashFamily,
    "lists": ListFamily,
    "sets": SetFamily,
}
"""Every optional family, by the feature name AdminService shows."""


def family_features(backend_class: type) -> frozenset[str]:
    """The feature names of the families `backend_class` implements (for its spec)."""
    return frozenset(
        name for name, family in CACHE_FAMILIES.items() if issubclass(backend_class, family)
    )


def hashes_of(backend: object, target: str) -> HashFamily:
    """`backend` as a hash store, or FAILED_PRECONDITION(UNSUPPORTED_OPERATION)."""
    if isinstance(backend, HashFamily):
        return backend
    raise _unsupported("hashes", target)


def lists_of(backend: object, target: str) -> ListFamily:
    """`backend` as a list store, or FAILED_PRECONDITION(UNSUPPORTED_OPERATION)."""
    if isinstance(backend, ListFamily):
        return backend
    raise _unsupported("lists", target)


def sets_of(backend: object, target: str) -> SetFamily:
    """`backend` as a set store, or FAILED_PRECONDITION(UNSUPPORTED_OPERATION)."""
    if isinstance(backend, SetFamily):
        return backend
    raise _unsupported("sets", target)


def _unsupported(feature: str, target: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the cache {target!r} has no {feature}: its backend does not implement them",
        reason="UNSUPPORTED_OPERATION",
        metadata={"target": target, "feature": feature},
    )


async def run_batch_sequentially(backend: CacheBackend, ops: Sequence[CacheOp]) -> list[OpResult]:
    """The default non-atomic batch: each op through the backend's single operation, in order.

    The first failing op's error propagates; the ops before it stay applied and the ops after
    it are not run.
    """
    results: list[OpResult] = []
    for op in ops:
        result: OpResult
        match op:
            case GetOp():
                result = await backend.get(op.key)
            case SetOp():
                result = await backend.set(op.key, op.value, ttl=op.ttl, condition=op.condition)
            case DeleteOp():
                result = await backend.delete(op.keys)
            case ExistsOp():
                result = await backend.exists(op.key)
            case IncrementOp():
                result = await backend.increment(op.key, op.delta)
            case ExpireOp():
                result = await backend.expire(op.key, op.ttl)
            case _:
                assert_never(op)
        results.append(result)
    return results
