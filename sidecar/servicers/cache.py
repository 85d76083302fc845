"""CacheService: validates requests, picks the cache integration by target, and maps
proto messages to the `CacheBackend` interface. No retry or breaker logic lives here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from generated.integration.v1 import cache_pb2, cache_pb2_grpc
from sidecar.backends.cache import (
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
    hashes_of,
    lists_of,
    sets_of,
)
from sidecar.runtime import Integration, Integrations
from sidecar.servicers._common import (
    Context,
    call_through,
    invalid,
    positive_ttl,
    require_name,
    resolve,
)

__all__ = ["CacheServicer"]

_CONDITIONS = {
    cache_pb2.SET_CONDITION_UNSPECIFIED: SetCondition.ALWAYS,
    cache_pb2.SET_CONDITION_IF_ABSENT: SetCondition.IF_ABSENT,
    cache_pb2.SET_CONDITION_IF_PRESENT: SetCondition.IF_PRESENT,
}
_ENDS = {
    cache_pb2.LIST_END_UNSPECIFIED: ListEnd.RIGHT,
    cache_pb2.LIST_END_LEFT: ListEnd.LEFT,
    cache_pb2.LIST_END_RIGHT: ListEnd.RIGHT,
}
_MAX_ITEMS = 10_000
_MAX_POP = 10_000


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Serve CacheService over the configured cache integrations."""

    def __init__(self, integrations: Integrations) -> None:
        self._integrations = integrations

    def _target(self, target: str) -> Integration[Any]:
        return resolve(self._integrations, "cache", target)

    async def Get(self, request: cache_pb2.GetRequest, context: Context) -> cache_pb2.GetResponse:
        cache = self._target(request.target)
        key = _key(cache, request.key)
        value = await call_through(
            cache, context, lambda: cache.backend.get(key), may_answer_locally=True
        )
        if value is None:
            return cache_pb2.GetResponse(found=False)
        return cache_pb2.GetResponse(found=True, value=value)

    async def Set(self, request: cache_pb2.SetRequest, context: Context) -> cache_pb2.SetResponse:
        cache = self._target(request.target)
        op = _set_op(cache, request, "")
        applied = await call_through(
            cache,
            context,
            lambda: cache.backend.set(op.key, op.value, ttl=op.ttl, condition=op.condition),
        )
        return cache_pb2.SetResponse(applied=applied)

    async def Delete(
        self, request: cache_pb2.DeleteRequest, context: Context
    ) -> cache_pb2.DeleteResponse:
        cache = self._target(request.target)
        keys = _keys(cache, request.keys)
        deleted = await call_through(cache, context, lambda: cache.backend.delete(keys))
        return cache_pb2.DeleteResponse(deleted=deleted)

    async def Exists(
        self, request: cache_pb2.ExistsRequest, context: Context
    ) -> cache_pb2.ExistsResponse:
        cache = self._target(request.target)
        key = _key(cache, request.key)
        exists = await call_through(cache, context, lambda: cache.backend.exists(key))
        return cache_pb2.ExistsResponse(exists=exists)

    async def Expire(
        self, request: cache_pb2.ExpireRequest, context: Context
    ) -> cache_pb2.ExpireResponse:
        cache = self._target(request.target)
        key = _key(cache, request.key)
        ttl = positive_ttl(request, required=True)
        assert ttl is not None
        applied = await call_through(cache, context, lambda: cache.backend.expire(key, ttl))
        return cache_pb2.ExpireResponse(applied=applied)

    async def Increment(
        self, request: cache_pb2.IncrementRequest, context: Context
    ) -> cache_pb2.IncrementResponse:
        cache = self._target(request.target)
        key = _key(cache, request.key)
        delta = request.delta or 1
        value = await call_through(
            cache, context, lambda: cache.backend.increment(key, delta), idempotent=False
        )
        return cache_pb2.IncrementResponse(value=value)

    async def GetMany(
        self, request: cache_pb2.GetManyRequest, context: Context
    ) -> cache_pb2.GetManyResponse:
        cache = self._target(request.target)
        keys = _keys(cache, request.keys)
        values = await call_through(cache, context, lambda: cache.backend.get_many(keys))
        return cache_pb2.GetManyResponse(
            entries=[
                cache_pb2.CacheEntry(key=key, value=value or b"", found=value is not None)
                for key, value in zip(keys, values, strict=True)
            ]
        )

    async def SetMany(
        self, request: cache_pb2.SetManyRequest, context: Context
    ) -> cache_pb2.SetManyResponse:
        cache = self._target(request.target)
        if not request.entries:
            raise invalid("entries", "must not be empty")
        if len(request.entries) > _MAX_ITEMS:
            raise invalid("entries", f"at most {_MAX_ITEMS} entries per call")
        items = [
            (
                _key(cache, entry.key, f"entries[{i}].key"),
                _value(cache, entry.value, f"entries[{i}].value"),
            )
            for i, entry in enumerate(request.entries)
        ]
        ttl = positive_ttl(request)
        await call_through(cache, context, lambda: cache.backend.set_many(items, ttl=ttl))
        return cache_pb2.SetManyResponse()

    async def HashGet(
        self, request: cache_pb2.HashGetRequest, context: Context
    ) -> cache_pb2.HashGetResponse:
        cache = self._target(request.target)
        hashes = hashes_of(cache.backend, cache.name)
        key = _key(cache, request.key)
        field = _key(cache, request.field, "field")
        value = await call_through(cache, context, lambda: hashes.hash_get(key, field))
        if value is None:
            return cache_pb2.HashGetResponse(found=False)
        return cache_pb2.HashGetResponse(found=True, value=value)

    async def HashSet(
        self, request: cache_pb2.HashSetRequest, context: Context
    ) -> cache_pb2.HashSetResponse:
        cache = self._target(request.target)
        hashes = hashes_of(cache.backend, cache.name)
        key = _key(cache, request.key)
        if not request.fields:
            raise invalid("fields", "must not be empty")
        fields = {
            _key(cache, name, "fields"): _value(cache, value, f"fields[{name}]")
            for name, value in request.fields.items()
        }
        added = await call_through(cache, context, lambda: hashes.hash_set(key, fields))
        return cache_pb2.HashSetResponse(added=added)

    async def HashGetAll(
        self, request: cache_pb2.HashGetAllRequest, context: Context
    ) -> cache_pb2.HashGetAllResponse:
        cache = self._target(request.target)
        hashes = hashes_of(cache.backend, cache.name)
        key = _key(cache, request.key)
        fields = await call_through(cache, context, lambda: hashes.hash_get_all(key))
        return cache_pb2.HashGetAllResponse(fields=fields)

    async def ListPush(
        self, request: cache_pb2.ListPushRequest, context: Context
    ) -> cache_pb2.ListPushResponse:
        cache = self._target(request.target)
        lists = lists_of(cache.backend, cache.name)
        key = _key(cache, request.key)
        values = _values(cache, request.values, "values")
        end = _ENDS.get(request.end)
        if end is None:
            raise invalid("end", "unknown list end")
        length = await call_through(
            cache, context, lambda: lists.list_push(key, values, end), idempotent=False
        )
        return cache_pb2.ListPushResponse(length=length)

    async def ListPop(
        self, request: cache_pb2.ListPopRequest, context: Context
    ) -> cache_pb2.ListPopResponse:
        cache = self._target(request.target)
        lists = lists_of(cache.backend, cache.name)
        key = _key(cache, request.key)
        end = _ENDS.get(request.end)
        if end is None:
            raise invalid("end", "unknown list end")
        if request.count < 0 or request.count > _MAX_POP:
            raise invalid("count", f"must be between 0 and {_MAX_POP}")
        count = request.count or 1
        values = await call_through(
            cache, context, lambda: lists.list_pop(key, end, count), idempotent=False
        )
        return cache_pb2.ListPopResponse(values=values)

    async def SetAdd(
        self, request: cache_pb2.SetAddRequest, context: Context
    ) -> cache_pb2.SetAddResponse:
        cache = self._target(request.target)
        sets = sets_of(cache.backend, cache.name)
        key = _key(cache, request.key)
        members = _values(cache, request.members, "members")
        added = await call_through(cache, context, lambda: sets.set_add(key, members))
        return cache_pb2.SetAddResponse(added=added)

    async def SetMembers(
        self, request: cache_pb2.SetMembersRequest, context: Context
    ) -> cache_pb2.SetMembersResponse:
        cache = self._target(request.target)
        sets = sets_of(cache.backend, cache.name)
        key = _key(cache, request.key)
        members = await call_through(cache, context, lambda: sets.set_members(key))
        return cache_pb2.SetMembersResponse(members=members)

    async def Batch(
        self, request: cache_pb2.BatchRequest, context: Context
    ) -> cache_pb2.BatchResponse:
        cache = self._target(request.target)
        if not request.operations:
            raise invalid("operations", "must not be empty")
        if len(request.operations) > _MAX_ITEMS:
            raise invalid("operations", f"at most {_MAX_ITEMS} operations per call")
        ops = [
            _batch_op(cache, request.target, op, f"operations[{i}]")
            for i, op in enumerate(request.operations)
        ]
        idempotent = not any(isinstance(op, IncrementOp) for op in ops)
        results = await call_through(
            cache,
            context,
            lambda: cache.backend.batch(ops, atomic=request.atomic),
            idempotent=idempotent,
        )
        return cache_pb2.BatchResponse(
            results=[_batch_result(op, result) for op, result in zip(ops, results, strict=True)]
        )


def _key(cache: Integration[Any], key: str, field: str = "key") -> str:
    return require_name(key, field, cache.settings.max_key_length)


def _keys(cache: Integration[Any], keys: Sequence[str], field: str = "keys") -> list[str]:
    if not keys:
        raise invalid(field, "must not be empty")
    if len(keys) > _MAX_ITEMS:
        raise invalid(field, f"at most {_MAX_ITEMS} keys per call")
    return [_key(cache, key, f"{field}[{i}]") for i, key in enumerate(keys)]


def _value(cache: Integration[Any], value: bytes, field: str) -> bytes:
    limit: int = cache.settings.max_value_size
    if len(value) > limit:
        raise invalid(field, f"is {len(value)} bytes; the limit is {limit}", "VALUE_TOO_LARGE")
    return value


def _values(cache: Integration[Any], values: Sequence[bytes], field: str) -> list[bytes]:
    if not values:
        raise invalid(field, "must not be empty")
    if len(values) > _MAX_ITEMS:
        raise invalid(field, f"at most {_MAX_ITEMS} values per call")
    return [_value(cache, value, f"{field}[{i}]") for i, value in enumerate(values)]


def _set_op(cache: Integration[Any], request: cache_pb2.SetRequest, prefix: str) -> SetOp:
    condition = _CONDITIONS.get(request.condition)
    if condition is None:
        raise invalid(f"{prefix}condition", "unknown condition")
    return SetOp(
        key=_key(cache, request.key, f"{prefix}key"),
        value=_value(cache, request.value, f"{prefix}value"),
        ttl=positive_ttl(request, f"{prefix}ttl"),
        condition=condition,
    )


def _batch_op(
    cache: Integration[Any], target: str, op: cache_pb2.BatchOperation, path: str
) -> CacheOp:
    kind = op.WhichOneof("operation")
    if kind is None:
        raise invalid(path, "must set one operation")
    inner = getattr(op, kind)
    prefix = f"{path}.{kind}."
    if inner.target and inner.target != target:
        raise invalid(f"{prefix}target", "must be empty or equal to the batch target")
    if kind == "get":
        return GetOp(_key(cache, inner.key, prefix + "key"))
    if kind == "set":
        return _set_op(cache, inner, prefix)
    if kind == "delete":
        return DeleteOp(tuple(_keys(cache, inner.keys, prefix + "keys")))
    if kind == "exists":
        return ExistsOp(_key(cache, inner.key, prefix + "key"))
    if kind == "increment":
        return IncrementOp(_key(cache, inner.key, prefix + "key"), inner.delta or 1)
    ttl = positive_ttl(inner, prefix + "ttl", required=True)
    assert ttl is not None
    return ExpireOp(_key(cache, inner.key, prefix + "key"), ttl)


def _batch_result(op: CacheOp, result: OpResult) -> cache_pb2.BatchResult:
    if isinstance(op, GetOp):
        if result is None:
            return cache_pb2.BatchResult(get=cache_pb2.GetResponse(found=False))
        assert isinstance(result, bytes)
        return cache_pb2.BatchResult(get=cache_pb2.GetResponse(found=True, value=result))
    if isinstance(op, SetOp):
        return cache_pb2.BatchResult(set=cache_pb2.SetResponse(applied=bool(result)))
    if isinstance(op, DeleteOp):
        return cache_pb2.BatchResult(delete=cache_pb2.DeleteResponse(deleted=int(result or 0)))
    if isinstance(op, ExistsOp):
        return cache_pb2.BatchResult(exists=cache_pb2.ExistsResponse(exists=bool(result)))
    if isinstance(op, IncrementOp):
        return cache_pb2.BatchResult(increment=cache_pb2.IncrementResponse(value=int(result or 0)))
    return cache_pb2.BatchResult(expire=cache_pb2.ExpireResponse(applied=bool(result)))
