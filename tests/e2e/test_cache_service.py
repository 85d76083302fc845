"""CacheService end to end: a real grpc.aio server on a free port, the in-memory backend."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2
from support import error_info

from generated.integration.v1 import cache_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub

pytestmark = pytest.mark.e2e


def ttl(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


async def test_set_then_get_round_trips_bytes(cache: CacheServiceStub) -> None:
    await cache.Set(cache_pb2.SetRequest(key="greeting", value=b"\x00hello\xff"))
    got = await cache.Get(cache_pb2.GetRequest(key="greeting"))
    assert (got.found, got.value) == (True, b"\x00hello\xff")


async def test_get_of_missing_key_is_not_found_flag_not_error(cache: CacheServiceStub) -> None:
    got = await cache.Get(cache_pb2.GetRequest(key="nope"))
    assert got.found is False


async def test_set_conditions(cache: CacheServiceStub) -> None:
    absent = cache_pb2.SET_CONDITION_IF_ABSENT
    present = cache_pb2.SET_CONDITION_IF_PRESENT
    first = await cache.Set(cache_pb2.SetRequest(key="c", value=b"1", condition=absent))
    second = await cache.Set(cache_pb2.SetRequest(key="c", value=b"2", condition=absent))
    third = await cache.Set(cache_pb2.SetRequest(key="d", value=b"3", condition=present))
    assert (first.applied, second.applied, third.applied) == (True, False, False)
    assert (await cache.Get(cache_pb2.GetRequest(key="c"))).value == b"1"


async def test_delete_exists_expire_increment(cache: CacheServiceStub) -> None:
    await cache.Set(cache_pb2.SetRequest(key="a", value=b"x"))
    assert (await cache.Exists(cache_pb2.ExistsRequest(key="a"))).exists
    assert (await cache.Expire(cache_pb2.ExpireRequest(key="a", ttl=ttl(60)))).applied
    assert not (await cache.Expire(cache_pb2.ExpireRequest(key="zz", ttl=ttl(60)))).applied
    assert (await cache.Delete(cache_pb2.DeleteRequest(keys=["a", "b"]))).deleted == 1
    assert (await cache.Increment(cache_pb2.IncrementRequest(key="n", delta=5))).value == 5
    assert (await cache.Increment(cache_pb2.IncrementRequest(key="n", delta=-2))).value == 3


async def test_get_many_and_set_many_keep_request_order(cache: CacheServiceStub) -> None:
    await cache.SetMany(
        cache_pb2.SetManyRequest(
            entries=[
                cache_pb2.CacheEntry(key="k1", value=b"1"),
                cache_pb2.CacheEntry(key="k3", value=b"3"),
            ]
        )
    )
    got = await cache.GetMany(cache_pb2.GetManyRequest(keys=["k3", "k2", "k1"]))
    assert [(e.key, e.found, e.value) for e in got.entries] == [
        ("k3", True, b"3"),
        ("k2", False, b""),
        ("k1", True, b"1"),
    ]


async def test_hash_list_and_set_operations(cache: CacheServiceStub) -> None:
    added = await cache.HashSet(cache_pb2.HashSetRequest(key="h", fields={"a": b"1", "b": b"2"}))
    field = await cache.HashGet(cache_pb2.HashGetRequest(key="h", field="b"))
    everything = await cache.HashGetAll(cache_pb2.HashGetAllRequest(key="h"))
    assert (added.added, field.value, dict(everything.fields)) == (2, b"2", {"a": b"1", "b": b"2"})

    right, left = cache_pb2.LIST_END_RIGHT, cache_pb2.LIST_END_LEFT
    await cache.ListPush(cache_pb2.ListPushRequest(key="l", values=[b"1", b"2"], end=right))
    pushed = await cache.ListPush(cache_pb2.ListPushRequest(key="l", values=[b"0"], end=left))
    popped = await cache.ListPop(cache_pb2.ListPopRequest(key="l", end=left, count=2))
    assert (pushed.length, list(popped.values)) == (3, [b"0", b"1"])

    await cache.SetAdd(cache_pb2.SetAddRequest(key="s", members=[b"b", b"a"]))
    again = await cache.SetAdd(cache_pb2.SetAddRequest(key="s", members=[b"a", b"c"]))
    members = await cache.SetMembers(cache_pb2.SetMembersRequest(key="s"))
    assert (again.added, list(members.members)) == (1, [b"a", b"b", b"c"])


async def test_wrong_type_is_failed_precondition(cache: CacheServiceStub) -> None:
    await cache.Set(cache_pb2.SetRequest(key="str", value=b"v"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cache.HashGet(cache_pb2.HashGetRequest(key="str", field="f"))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "WRONG_TYPE"


async def test_batch_returns_one_result_per_operation(cache: CacheServiceStub) -> None:
    response = await cache.Batch(
        cache_pb2.BatchRequest(
            operations=[
                cache_pb2.BatchOperation(set=cache_pb2.SetRequest(key="b1", value=b"v")),
                cache_pb2.BatchOperation(get=cache_pb2.GetRequest(key="b1")),
                cache_pb2.BatchOperation(increment=cache_pb2.IncrementRequest(key="b2", delta=2)),
                cache_pb2.BatchOperation(exists=cache_pb2.ExistsRequest(key="b3")),
            ]
        )
    )
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["set", "get", "increment", "exists"]
    assert response.results[1].get.value == b"v"
    assert response.results[2].increment.value == 2


async def test_failing_atomic_batch_applies_nothing(cache: CacheServiceStub) -> None:
    await cache.Set(cache_pb2.SetRequest(key="text", value=b"not a number"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cache.Batch(
            cache_pb2.BatchRequest(
                atomic=True,
                operations=[
                    cache_pb2.BatchOperation(set=cache_pb2.SetRequest(key="atom", value=b"1")),
                    cache_pb2.BatchOperation(increment=cache_pb2.IncrementRequest(key="text")),
                ],
            )
        )
    assert error_info(caught.value).reason == "NOT_AN_INTEGER"
    assert not (await cache.Exists(cache_pb2.ExistsRequest(key="atom"))).exists
