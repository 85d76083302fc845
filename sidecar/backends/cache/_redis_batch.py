"""Batches on Redis: the atomic one as one Lua script, the other as a plain pipeline.

MULTI/EXEC cannot keep the atomic promise of `CacheBackend.batch`: a command that fails
inside EXEC (INCRBY on a word, GET on a hash) fails alone and the others stay applied. So
the atomic batch is one Lua script in two passes:

1. Check: simulate every op, in order, on a shadow of the keys it touches (their type, and
   the value of strings an INCRBY reads), and stop with Redis's own error reply on the first
   op that would fail: WRONGTYPE, not an integer, or an int64 overflow (exact decimal
   arithmetic, since Lua numbers are doubles). Nothing has been written yet.
2. Apply: run the real commands, which can no longer fail.

A script runs alone on the server, so no other client sees a partial batch either way. The
ops travel as KEYS (every key, in op order) and ARGV (an op code and its arguments per op),
so the script also works on a Redis Cluster shard when the keys share a hash slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, assert_never

from sidecar.backends.cache.base import (
    CacheOp,
    DeleteOp,
    ExistsOp,
    ExpireOp,
    GetOp,
    IncrementOp,
    OpResult,
    SetCondition,
    SetOp,
)

__all__ = ["ATOMIC_BATCH_LUA", "encode_atomic", "ttl_ms", "typed_result"]

# Redis stores TTLs in milliseconds and refuses ones that overflow when added to "now";
# ~31,700 years is far beyond any cache entry and far below that limit.
_MAX_TTL_MS = 10**15

_NX_XX = {SetCondition.ALWAYS: "", SetCondition.IF_ABSENT: "NX", SetCondition.IF_PRESENT: "XX"}


def ttl_ms(ttl: float) -> int:
    """A TTL in seconds as Redis milliseconds: rounded, at least 1, at most ~31,700 years."""
    return min(max(1, round(ttl * 1000)), _MAX_TTL_MS)


def encode_atomic(ops: Sequence[CacheOp], prefix: str) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `ATOMIC_BATCH_LUA` for `ops`, keys prefixed with `prefix`."""
    keys: list[str] = []
    args: list[Any] = []
    for op in ops:
        match op:
            case GetOp():
                keys.append(prefix + op.key)
                args.append("G")
            case SetOp():
                keys.append(prefix + op.key)
                px = "" if op.ttl is None else ttl_ms(op.ttl)
                args += ("S", op.value, px, _NX_XX[op.condition])
            case DeleteOp():
                keys += (prefix + key for key in op.keys)
                args += ("D", len(op.keys))
            case ExistsOp():
                keys.append(prefix + op.key)
                args.append("E")
            case IncrementOp():
                keys.append(prefix + op.key)
                args += ("I", op.delta)
            case ExpireOp():
                keys.append(prefix + op.key)
                args += ("X", ttl_ms(op.ttl))
            case _:
                assert_never(op)
    return keys, args


def typed_result(op: CacheOp, raw: Any) -> OpResult:
    """The contract's result type for one op from Redis's reply (script or pipeline)."""
    match op:
        case GetOp():
            return None if raw is None or raw is False else bytes(raw)
        case SetOp() | ExistsOp() | ExpireOp():
            return bool(raw)
        case DeleteOp() | IncrementOp():
            return int(raw)
        case _:
            assert_never(op)


ATOMIC_BATCH_LUA = r"""
local WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value'
local NOT_INT = 'ERR value is not an integer or out of range'
local OVERFLOW = 'ERR increment or decrement would overflow'
local B = 1000000000

-- Is s the decimal form of an int64, as Redis's string2ll reads it?
local function is_int64(s)
  if s == '0' then return true end
  local neg, digits = string.match(s, '^(%-?)([1-9]%d*)$')
  if not digits or #digits > 19 then return false end
  if #digits < 19 then return true end
  return digits <= (neg == '-' and '9223372036854775808' or '9223372036854775807')
end

-- A decimal int64 as three signed base-1e9 limbs (exact in doubles).
local function limbs(s)
  local neg = string.sub(s, 1, 1) == '-'
  local d = string.rep('0', 27 - #s + (neg and 1 or 0)) .. (neg and string.sub(s, 2) or s)
  local h, m, l = tonumber(string.sub(d, 1, 9)), tonumber(string.sub(d, 10, 18)),
    tonumber(string.sub(d, 19, 27))
  if neg then return -h, -m, -l end
  return h, m, l
end

-- Carry so that 0 <= m, l < B; the sign of the number is then the sign of h.
local function carry(h, m, l)
  local c = math.floor(l / B); l = l - c * B; m = m + c
  c = math.floor(m / B); m = m - c * B; h = h + c
  return h, m, l
end

-- a + b for decimal int64 strings, or nil if the sum leaves the int64 range.
local function add(a, b)
  local ah, am, al = limbs(a)
  local bh, bm, bl = limbs(b)
  local h, m, l = carry(ah + bh, am + bm, al + bl)
  local sign = ''
  if h < 0 then sign = '-'; h, m, l = carry(-h, -m, -l) end
  local digits = string.gsub(string.format('%d%09d%09d', h, m, l), '^0+', '')
  if digits == '' then return '0' end
  if #digits > 19 or (#digits == 19 and digits > (sign == '-' and
      '9223372036854775808' or '9223372036854775807')) then
    return nil
  end
  return sign .. digits
end

-- Pass 1: check every op against a shadow of the keys, writing nothing.
local shadow = {}
local function state(key)
  local s = shadow[key]
  if s == nil then
    s = {t = redis.call('TYPE', key)['ok']}
    shadow[key] = s
  end
  return s
end

-- Lua numbers are doubles, so INCRBY's integer reply would lose digits past 2^53: the
-- exact sums computed here are what the batch returns for its increments.
local sums = {}
local a, k, n = 1, 1, 0
while a <= #ARGV do
  local code = ARGV[a]
  n = n + 1
  if code == 'G' then
    local t = state(KEYS[k]).t
    if t ~= 'none' and t ~= 'string' then return redis.error_reply(WRONGTYPE) end
    a, k = a + 1, k + 1
  elseif code == 'S' then
    local exists = state(KEYS[k]).t ~= 'none'
    local cond = ARGV[a + 3]
    if not ((cond == 'NX' and exists) or (cond == 'XX' and not exists)) then
      shadow[KEYS[k]] = {t = 'string', v = ARGV[a + 1]}
    end
    a, k = a + 4, k + 1
  elseif code == 'D' then
    local n = tonumber(ARGV[a + 1])
    for i = k, k + n - 1 do shadow[KEYS[i]] = {t = 'none'} end
    a, k = a + 2, k + n
  elseif code == 'I' then
    local key = KEYS[k]
    local s = state(key)
    local current = '0'
    if s.t == 'string' then
      if s.v == nil then s.v = redis.call('GET', key) end
      current = s.v
    elseif s.t ~= 'none' then
      return redis.error_reply(WRONGTYPE)
    end
    if not is_int64(current) then return redis.error_reply(NOT_INT) end
    local sum = add(current, ARGV[a + 1])
    if sum == nil then return redis.error_reply(OVERFLOW) end
    shadow[key] = {t = 'string', v = sum}
    sums[n] = sum
    a, k = a + 2, k + 1
  else -- 'E' and 'X' cannot fail
    a, k = a + (code == 'X' and 2 or 1), k + 1
  end
end

-- Pass 2: apply, in order; nothing below can fail any more.
local results = {}
a, k = 1, 1
while a <= #ARGV do
  local code = ARGV[a]
  local r
  if code == 'G' then
    r = redis.call('GET', KEYS[k]); a, k = a + 1, k + 1
  elseif code == 'S' then
    local args = {KEYS[k], ARGV[a + 1]}
    if ARGV[a + 2] ~= '' then args[#args + 1] = 'PX'; args[#args + 1] = ARGV[a + 2] end
    if ARGV[a + 3] ~= '' then args[#args + 1] = ARGV[a + 3] end
    r = redis.call('SET', unpack(args)) and 1 or 0
    a, k = a + 4, k + 1
  elseif code == 'D' then
    local n = tonumber(ARGV[a + 1])
    local deleted = 0
    for i = k, k + n - 1 do deleted = deleted + redis.call('DEL', KEYS[i]) end
    r = deleted; a, k = a + 2, k + n
  elseif code == 'E' then
    r = redis.call('EXISTS', KEYS[k]); a, k = a + 1, k + 1
  elseif code == 'I' then
    redis.call('INCRBY', KEYS[k], ARGV[a + 1])
    r = sums[#results + 1]; a, k = a + 2, k + 1
  else
    r = redis.call('PEXPIRE', KEYS[k], ARGV[a + 1]); a, k = a + 2, k + 1
  end
  results[#results + 1] = r
end
return results
"""
"""Check-then-apply script of an atomic batch; see the module docstring."""
