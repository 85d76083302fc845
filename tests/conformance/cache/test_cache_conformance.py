"""Conformance suite of the cache capability: every `CacheBackend` must pass it.

The expected behaviour is Redis's; `conftest.py` holds the table of backends and a way to make
time pass (`elapse`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest

from sidecar.backends.cache import (
    CacheBackend,
    CacheOp,
    DeleteOp,
    ExistsOp,
    ExpireOp,
    GetOp,
    IncrementOp,
    ListEnd,
    SetCondition,
    SetOp,
)
from sidecar.errors import FailedPrecondition, Unavailable

Elapse = Callable[[float], Awaitable[None]]
needs = pytest.mark.needs
"""Runs only on backends with these optional families (see conftest.py)."""

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


# -- strings -----------------------------------------------------------------------------------


async def test_get_of_missing_key_is_none(cache: CacheBackend) -> None:
    assert await cache.get("missing") is None


async def test_set_then_get_returns_the_value(cache: CacheBackend) -> None:
    await cache.set("k", b"v")
    assert await cache.get("k") == b"v"


async def test_set_replaces_the_previous_value(cache: CacheBackend) -> None:
    await cache.set("k", b"old")
    await cache.set("k", b"new")
    assert await cache.get("k") == b"new"


async def test_set_stores_arbitrary_bytes(cache: CacheBackend) -> None:
    value = bytes(range(256))
    await cache.set("k", value)
    assert await cache.get("k") == value


async def test_set_if_absent_on_missing_key_applies(cache: CacheBackend) -> None:
    assert await cache.set("k", b"v", condition=SetCondition.IF_ABSENT) is True


async def test_set_if_absent_on_existing_key_is_refused_and_keeps_the_value(
    cache: CacheBackend,
) -> None:
    await cache.set("k", b"first")
    applied = await cache.set("k", b"second", condition=SetCondition.IF_ABSENT)
    assert (applied, await cache.get("k")) == (False, b"first")


async def test_set_if_present_on_missing_key_is_refused(cache: CacheBackend) -> None:
    applied = await cache.set("k", b"v", condition=SetCondition.IF_PRESENT)
    assert (applied, await cache.exists("k")) == (False, False)


async def test_set_if_present_on_existing_key_applies(cache: CacheBackend) -> None:
    await cache.set("k", b"first")
    applied = await cache.set("k", b"second", condition=SetCondition.IF_PRESENT)
    assert (applied, await cache.get("k")) == (True, b"second")


@needs("hashes")
async def test_set_replaces_a_key_of_another_type(cache: CacheBackend) -> None:
    await cache.hash_set("k", {"f": b"v"})
    await cache.set("k", b"plain")
    assert await cache.get("k") == b"plain"


@needs("lists")
async def test_set_if_absent_counts_a_key_of_another_type_as_present(
    cache: CacheBackend,
) -> None:
    await cache.list_push("k", [b"x"], ListEnd.RIGHT)
    assert await cache.set("k", b"v", condition=SetCondition.IF_ABSENT) is False


async def test_delete_returns_how_many_keys_existed(cache: CacheBackend) -> None:
    await cache.set("a", b"1")
    await cache.set("b", b"2")
    assert await cache.delete(["a", "b", "missing"]) == 2


async def test_delete_counts_a_repeated_key_once(cache: CacheBackend) -> None:
    await cache.set("a", b"1")
    assert await cache.delete(["a", "a"]) == 1


@needs("hashes", "lists", "sets")
async def test_delete_removes_keys_of_every_type(cache: CacheBackend) -> None:
    await cache.set("s", b"1")
    await cache.hash_set("h", {"f": b"1"})
    await cache.list_push("l", [b"1"], ListEnd.RIGHT)
    await cache.set_add("z", [b"1"])
    await cache.delete(["s", "h", "l", "z"])
    assert [await cache.exists(key) for key in ("s", "h", "l", "z")] == [False] * 4


async def test_exists_is_false_for_missing_key(cache: CacheBackend) -> None:
    assert await cache.exists("missing") is False


@needs("hashes")
async def test_exists_is_true_for_a_hash_key(cache: CacheBackend) -> None:
    await cache.hash_set("h", {"f": b"1"})
    assert await cache.exists("h") is True


# -- TTL ---------------------------------------------------------------------------------------


async def test_key_with_ttl_is_present_before_it_elapses(
    cache: CacheBackend, elapse: Elapse
) -> None:
    await cache.set("k", b"v", ttl=0.5)
    await elapse(0.2)
    assert await cache.get("k") == b"v"


async def test_key_with_ttl_is_gone_after_it_elapses(cache: CacheBackend, elapse: Elapse) -> None:
    await cache.set("k", b"v", ttl=0.3)
    await elapse(0.4)
    assert (await cache.get("k"), await cache.exists("k")) == (None, False)


async def test_ttl_reports_the_remaining_seconds(cache: CacheBackend, elapse: Elapse) -> None:
    await cache.set("k", b"v", ttl=10.0)
    await elapse(0.25)
    remaining = await cache.ttl("k")
    assert remaining is not None
    assert 9.0 < remaining <= 9.75


async def test_ttl_of_key_without_expiry_is_none(cache: CacheBackend) -> None:
    await cache.set("k", b"v")
    assert await cache.ttl("k") is None


async def test_ttl_of_missing_key_is_none(cache: CacheBackend) -> None:
    assert await cache.ttl("missing") is None


async def test_set_without_ttl_clears_the_previous_expiry(
    cache: CacheBackend, elapse: Elapse
) -> None:
    await cache.set("k", b"v", ttl=0.3)
    await cache.set("k", b"w")
    await elapse(0.4)
    assert await cache.get("k") == b"w"


async def test_expire_on_missing_key_returns_false(cache: CacheBackend) -> None:
    assert await cache.expire("missing", 1.0) is False


async def test_expire_makes_an_existing_key_expire(cache: CacheBackend, elapse: Elapse) -> None:
    await cache.set("k", b"v")
    assert await cache.expire("k", 0.3) is True
    await elapse(0.4)
    assert await cache.exists("k") is False


async def test_expire_can_extend_a_ttl(cache: CacheBackend, elapse: Elapse) -> None:
    await cache.set("k", b"v", ttl=0.3)
    await cache.expire("k", 10.0)
    await elapse(0.4)
    assert await cache.get("k") == b"v"


async def test_set_if_absent_applies_once_the_old_key_expired(
    cache: CacheBackend, elapse: Elapse
) -> None:
    await cache.set("k", b"old", ttl=0.3)
    await elapse(0.4)
    assert await cache.set("k", b"new", condition=SetCondition.IF_ABSENT) is True


async def test_expired_key_is_not_counted_by_delete(cache: CacheBackend, elapse: Elapse) -> None:
    await cache.set("k", b"v", ttl=0.3)
    await elapse(0.4)
    assert await cache.delete(["k"]) == 0


@needs("hashes", "lists", "sets")
@pytest.mark.parametrize("kind", ["hash", "list", "set"])
async def test_container_key_with_ttl_is_gone_after_it_elapses(
    cache: CacheBackend, elapse: Elapse, kind: str
) -> None:
    await make_key(cache, "k", kind)
    await cache.expire("k", 0.3)
    await elapse(0.4)
    assert await read_container(cache, "k", kind) == EMPTY[kind]


@pytest.mark.parametrize("ttl", [0.0, -1.0, math.nan, math.inf])
async def test_set_rejects_a_ttl_that_is_not_a_positive_finite_number(
    cache: CacheBackend, ttl: float
) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", b"v", ttl=ttl)


@pytest.mark.parametrize("ttl", [0.0, -1.0, math.nan])
async def test_expire_rejects_a_ttl_that_is_not_a_positive_number(
    cache: CacheBackend, ttl: float
) -> None:
    await cache.set("k", b"v")
    with pytest.raises(ValueError, match="ttl"):
        await cache.expire("k", ttl)


# -- increment ---------------------------------------------------------------------------------


async def test_increment_of_missing_key_counts_from_zero(cache: CacheBackend) -> None:
    assert await cache.increment("n", 5) == 5


async def test_increment_adds_to_an_integer_value(cache: CacheBackend) -> None:
    await cache.set("n", b"40")
    await cache.increment("n", 2)
    assert await cache.get("n") == b"42"


async def test_increment_with_negative_delta_decrements(cache: CacheBackend) -> None:
    await cache.set("n", b"1")
    assert await cache.increment("n", -3) == -2


async def test_increment_keeps_the_ttl(cache: CacheBackend, elapse: Elapse) -> None:
    await cache.set("n", b"1", ttl=0.3)
    await cache.increment("n", 1)
    await elapse(0.4)
    assert await cache.exists("n") is False


async def test_increment_reaches_the_int64_bounds(cache: CacheBackend) -> None:
    await cache.set("hi", str(INT64_MAX - 1).encode())
    await cache.set("lo", str(INT64_MIN + 1).encode())
    assert (await cache.increment("hi", 1), await cache.increment("lo", -1)) == (
        INT64_MAX,
        INT64_MIN,
    )


@pytest.mark.parametrize(
    "value",
    [b"abc", b"1.5", b" 1", b"1 ", b"+1", b"01", b"-0", b"", b"9223372036854775808"],
    ids=[
        "letters",
        "float",
        "leading-space",
        "trailing-space",
        "plus",
        "leading-zero",
        "minus-zero",
        "empty",
        "above-int64",
    ],
)
async def test_increment_of_a_non_integer_value_fails_with_not_an_integer(
    cache: CacheBackend, value: bytes
) -> None:
    await cache.set("n", value)
    with pytest.raises(FailedPrecondition) as caught:
        await cache.increment("n", 1)
    assert caught.value.reason == "NOT_AN_INTEGER"


@pytest.mark.parametrize(("start", "delta"), [(INT64_MAX, 1), (INT64_MIN, -1), (0, 2**64)])
async def test_increment_past_int64_fails_with_integer_overflow(
    cache: CacheBackend, start: int, delta: int
) -> None:
    await cache.set("n", str(start).encode())
    with pytest.raises(FailedPrecondition) as caught:
        await cache.increment("n", delta)
    assert caught.value.reason == "INTEGER_OVERFLOW"


async def test_increment_that_overflows_leaves_the_value_unchanged(cache: CacheBackend) -> None:
    await cache.set("n", str(INT64_MAX).encode())
    with pytest.raises(FailedPrecondition):
        await cache.increment("n", 1)
    assert await cache.get("n") == str(INT64_MAX).encode()


# -- wrong type --------------------------------------------------------------------------------

KINDS = ["string", "hash", "list", "set"]
EMPTY: dict[str, object] = {"hash": {}, "list": [], "set": []}


async def make_key(cache: CacheBackend, key: str, kind: str) -> None:
    if kind == "string":
        await cache.set(key, b"1")
    elif kind == "hash":
        await cache.hash_set(key, {"f": b"1"})
    elif kind == "list":
        await cache.list_push(key, [b"1"], ListEnd.RIGHT)
    else:
        await cache.set_add(key, [b"1"])


async def read_container(cache: CacheBackend, key: str, kind: str) -> object:
    if kind == "hash":
        return await cache.hash_get_all(key)
    if kind == "list":
        return await cache.list_pop(key, ListEnd.LEFT, 10)
    return await cache.set_members(key)


# Every operation that needs one type, with the type it needs.
TYPED_OPS: dict[str, tuple[str, Callable[[CacheBackend], Awaitable[object]]]] = {
    "get": ("string", lambda c: c.get("k")),
    "increment": ("string", lambda c: c.increment("k", 1)),
    "hash_get": ("hash", lambda c: c.hash_get("k", "f")),
    "hash_set": ("hash", lambda c: c.hash_set("k", {"f": b"2"})),
    "hash_get_all": ("hash", lambda c: c.hash_get_all("k")),
    "list_push": ("list", lambda c: c.list_push("k", [b"2"], ListEnd.LEFT)),
    "list_pop": ("list", lambda c: c.list_pop("k", ListEnd.RIGHT)),
    "set_add": ("set", lambda c: c.set_add("k", [b"2"])),
    "set_members": ("set", lambda c: c.set_members("k")),
}
WRONG_TYPE_CASES = [
    pytest.param(kind, op, id=f"{op}-on-{kind}")
    for op, (needed, _) in TYPED_OPS.items()
    for kind in KINDS
    if kind != needed
]


@needs("hashes", "lists", "sets")
@pytest.mark.parametrize(("kind", "op"), WRONG_TYPE_CASES)
async def test_operation_on_a_key_of_another_type_fails_with_wrong_type(
    cache: CacheBackend, kind: str, op: str
) -> None:
    await make_key(cache, "k", kind)
    with pytest.raises(FailedPrecondition) as caught:
        await TYPED_OPS[op][1](cache)
    assert caught.value.reason == "WRONG_TYPE"


@needs("hashes")
async def test_get_many_reads_a_key_of_another_type_as_missing(cache: CacheBackend) -> None:
    await cache.hash_set("h", {"f": b"1"})
    assert await cache.get_many(["h"]) == [None]


# -- get_many / set_many -----------------------------------------------------------------------


async def test_get_many_returns_values_in_key_order_with_none_for_missing(
    cache: CacheBackend,
) -> None:
    await cache.set("a", b"1")
    await cache.set("c", b"3")
    assert await cache.get_many(["c", "missing", "a"]) == [b"3", None, b"1"]


async def test_set_many_stores_every_item(cache: CacheBackend) -> None:
    await cache.set_many([("a", b"1"), ("b", b"2")])
    assert await cache.get_many(["a", "b"]) == [b"1", b"2"]


async def test_set_many_with_ttl_makes_every_item_expire(
    cache: CacheBackend, elapse: Elapse
) -> None:
    await cache.set_many([("a", b"1"), ("b", b"2")], ttl=0.3)
    await elapse(0.4)
    assert await cache.get_many(["a", "b"]) == [None, None]


async def test_set_many_keeps_the_last_value_of_a_repeated_key(cache: CacheBackend) -> None:
    await cache.set_many([("a", b"1"), ("a", b"2")])
    assert await cache.get("a") == b"2"


# -- hashes ------------------------------------------------------------------------------------


@needs("hashes")
async def test_hash_set_returns_how_many_fields_were_new(cache: CacheBackend) -> None:
    await cache.hash_set("h", {"a": b"1"})
    assert await cache.hash_set("h", {"a": b"2", "b": b"3"}) == 1


@needs("hashes")
async def test_hash_get_reads_one_field(cache: CacheBackend) -> None:
    await cache.hash_set("h", {"a": b"1", "b": b"2"})
    assert await cache.hash_get("h", "b") == b"2"


@needs("hashes")
async def test_hash_get_of_missing_field_is_none(cache: CacheBackend) -> None:
    await cache.hash_set("h", {"a": b"1"})
    assert await cache.hash_get("h", "zz") is None


@needs("hashes")
async def test_hash_get_all_returns_every_field(cache: CacheBackend) -> None:
    await cache.hash_set("h", {"a": b"1"})
    await cache.hash_set("h", {"a": b"2", "b": b"3"})
    assert await cache.hash_get_all("h") == {"a": b"2", "b": b"3"}


@needs("hashes")
async def test_hash_get_all_of_missing_key_is_empty(cache: CacheBackend) -> None:
    assert await cache.hash_get_all("missing") == {}


@needs("hashes")
async def test_hash_set_keeps_the_ttl(cache: CacheBackend, elapse: Elapse) -> None:
    await cache.hash_set("h", {"a": b"1"})
    await cache.expire("h", 0.3)
    await cache.hash_set("h", {"b": b"2"})
    await elapse(0.4)
    assert await cache.exists("h") is False


# -- lists -------------------------------------------------------------------------------------


@needs("lists")
async def test_list_push_returns_the_new_length(cache: CacheBackend) -> None:
    await cache.list_push("l", [b"a"], ListEnd.RIGHT)
    assert await cache.list_push("l", [b"b", b"c"], ListEnd.RIGHT) == 3


@needs("lists")
async def test_list_pushed_right_and_popped_left_is_first_in_first_out(
    cache: CacheBackend,
) -> None:
    await cache.list_push("l", [b"a", b"b", b"c"], ListEnd.RIGHT)
    assert await cache.list_pop("l", ListEnd.LEFT, 3) == [b"a", b"b", b"c"]


@needs("lists")
async def test_list_push_left_of_several_values_reverses_them(cache: CacheBackend) -> None:
    await cache.list_push("l", [b"a", b"b", b"c"], ListEnd.LEFT)
    assert await cache.list_pop("l", ListEnd.LEFT, 3) == [b"c", b"b", b"a"]


@needs("lists")
async def test_list_pop_right_takes_from_the_tail(cache: CacheBackend) -> None:
    await cache.list_push("l", [b"a", b"b", b"c"], ListEnd.RIGHT)
    assert await cache.list_pop("l", ListEnd.RIGHT, 2) == [b"c", b"b"]


@needs("lists")
async def test_list_pop_takes_one_value_by_default(cache: CacheBackend) -> None:
    await cache.list_push("l", [b"a", b"b"], ListEnd.RIGHT)
    assert await cache.list_pop("l", ListEnd.LEFT) == [b"a"]


@needs("lists")
async def test_list_pop_of_missing_key_is_empty(cache: CacheBackend) -> None:
    assert await cache.list_pop("missing", ListEnd.LEFT) == []


@needs("lists")
async def test_list_pop_beyond_the_length_returns_all_and_removes_the_key(
    cache: CacheBackend,
) -> None:
    await cache.list_push("l", [b"a", b"b"], ListEnd.RIGHT)
    popped = await cache.list_pop("l", ListEnd.LEFT, 5)
    assert (popped, await cache.exists("l")) == ([b"a", b"b"], False)


@needs("lists")
async def test_list_push_of_no_values_returns_the_current_length(cache: CacheBackend) -> None:
    await cache.list_push("l", [b"a", b"b"], ListEnd.RIGHT)
    assert await cache.list_push("l", [], ListEnd.RIGHT) == 2


@needs("lists")
async def test_list_pop_rejects_a_count_below_one(cache: CacheBackend) -> None:
    with pytest.raises(ValueError, match="count"):
        await cache.list_pop("l", ListEnd.LEFT, 0)


# -- sets --------------------------------------------------------------------------------------


@needs("sets")
async def test_set_add_returns_how_many_members_were_new(cache: CacheBackend) -> None:
    await cache.set_add("z", [b"a"])
    assert await cache.set_add("z", [b"a", b"b", b"b"]) == 1


@needs("sets")
async def test_set_members_are_sorted(cache: CacheBackend) -> None:
    await cache.set_add("z", [b"c", b"a", b"b"])
    assert await cache.set_members("z") == [b"a", b"b", b"c"]


@needs("sets")
async def test_set_members_of_missing_key_is_empty(cache: CacheBackend) -> None:
    assert await cache.set_members("missing") == []


# -- empty containers disappear ----------------------------------------------------------------


@needs("hashes")
async def test_hash_set_of_no_fields_creates_no_key(cache: CacheBackend) -> None:
    await cache.hash_set("h", {})
    assert await cache.exists("h") is False


@needs("sets")
async def test_set_add_of_no_members_creates_no_key(cache: CacheBackend) -> None:
    await cache.set_add("z", [])
    assert await cache.exists("z") is False


@needs("lists")
async def test_list_popped_empty_no_longer_exists(cache: CacheBackend) -> None:
    await cache.list_push("l", [b"a"], ListEnd.RIGHT)
    await cache.list_pop("l", ListEnd.RIGHT)
    assert await cache.exists("l") is False


# -- batch -------------------------------------------------------------------------------------


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "non-atomic"])
async def test_batch_returns_one_result_per_op_in_order(cache: CacheBackend, atomic: bool) -> None:
    await cache.set("old", b"x")
    ops: list[CacheOp] = [
        SetOp("a", b"1"),
        GetOp("a"),
        SetOp("a", b"2", condition=SetCondition.IF_ABSENT),
        IncrementOp("n", 3),
        ExistsOp("n"),
        ExpireOp("n", 5.0),
        DeleteOp(("old", "missing")),
        GetOp("old"),
    ]
    results = await cache.batch(ops, atomic=atomic)
    assert results == [True, b"1", False, 3, True, True, 1, None]


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "non-atomic"])
async def test_batch_of_no_ops_returns_no_results(cache: CacheBackend, atomic: bool) -> None:
    assert await cache.batch([], atomic=atomic) == []


async def test_atomic_batch_whose_last_op_fails_leaves_the_earlier_ops_unapplied(
    cache: CacheBackend,
) -> None:
    await cache.set("existing", b"before")
    await cache.set("text", b"not a number")
    ops: list[CacheOp] = [
        SetOp("existing", b"after"),
        SetOp("created", b"1"),
        DeleteOp(("text",)),
        SetOp("text", b"still not a number"),
        IncrementOp("text", 1),
    ]
    with pytest.raises(FailedPrecondition):
        await cache.batch(ops, atomic=True)
    assert await cache.get_many(["existing", "created", "text"]) == [
        b"before",
        None,
        b"not a number",
    ]


@needs("hashes")
async def test_atomic_batch_that_fails_restores_the_earlier_ttl(
    cache: CacheBackend, elapse: Elapse
) -> None:
    await cache.set("k", b"v")
    await cache.hash_set("h", {"f": b"1"})
    with pytest.raises(FailedPrecondition):
        await cache.batch([ExpireOp("k", 0.3), GetOp("h")], atomic=True)
    await elapse(0.4)
    assert await cache.get("k") == b"v"


@needs("sets")
async def test_atomic_batch_failing_on_wrong_type_reports_wrong_type(
    cache: CacheBackend,
) -> None:
    await cache.set_add("z", [b"1"])
    with pytest.raises(FailedPrecondition) as caught:
        await cache.batch([SetOp("a", b"1"), IncrementOp("z", 1)], atomic=True)
    assert caught.value.reason == "WRONG_TYPE"


async def test_non_atomic_batch_whose_last_op_fails_keeps_the_earlier_ops(
    cache: CacheBackend,
) -> None:
    await cache.set("text", b"not a number")
    ops: list[CacheOp] = [SetOp("a", b"1"), IncrementOp("n", 1), IncrementOp("text", 1)]
    with pytest.raises(FailedPrecondition):
        await cache.batch(ops, atomic=False)
    assert await cache.get_many(["a", "n"]) == [b"1", b"1"]


# -- lifecycle ---------------------------------------------------------------------------------


async def test_ping_succeeds_on_an_open_backend(cache: CacheBackend) -> None:
    await cache.ping()


async def test_calls_after_close_fail_with_unavailable(cache: CacheBackend) -> None:
    await cache.close()
    with pytest.raises(Unavailable):
        await cache.get("k")


async def test_close_is_idempotent(cache: CacheBackend) -> None:
    await cache.close()
    await cache.close()
    with pytest.raises(Unavailable):
        await cache.ping()
