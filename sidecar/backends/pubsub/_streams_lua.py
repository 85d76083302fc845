"""Lua scripts of the Redis Streams backend.

Each step that must not be interrupted halfway runs as one script, because Redis runs a
script atomically: a sidecar killed mid-step (kill -9) never leaves a message both in the
dead letters and pending, or replayed and still dead.
"""

from __future__ import annotations

__all__ = ["CLAIM", "LEAVE", "REPLAY"]

# A dead letter is the original entry plus `dead.*` fields (see _streams_codec); REPLAY strips
# every field with that prefix again.

CLAIM = """
-- Hand pending messages idle for at least min_idle to this consumer, and move those that
-- were already delivered max_deliveries times to the dead-letter stream.
--
-- Why not XAUTOCLAIM: it reports neither delivery counts nor owners, so dead-lettering would
-- take more round trips and could race with another consumer's claim.
--
-- KEYS[1] stream, KEYS[2] dead-letter stream
-- ARGV: group, consumer, min_idle_ms, start and stop (the XPENDING id range), scan (entries
--       to look at), room (entries of other consumers that may be taken), max_deliveries,
--       owner_only ('1': only this consumer's entries), max_len (of the dead letters), now_ms
-- Returns {{{id, fields, delivery_count}...}, dead_lettered, scanned, last_scanned_id}.
local stream, dead = KEYS[1], KEYS[2]
local group, consumer, min_idle = ARGV[1], ARGV[2], ARGV[3]
local start, stop, scan = ARGV[4], ARGV[5], ARGV[6]
local room, max_deliveries = tonumber(ARGV[7]), tonumber(ARGV[8])
local pending
if ARGV[9] == '1' then
  pending = redis.call('XPENDING', stream, group, 'IDLE', min_idle, start, stop, scan, consumer)
else
  pending = redis.call('XPENDING', stream, group, 'IDLE', min_idle, start, stop, scan)
end
local claim, counts, dead_lettered, last = {}, {}, 0, ''
for _, p in ipairs(pending) do
  local id, owner, count = p[1], p[2], tonumber(p[4])
  last = id
  if count >= max_deliveries then
    local entry = redis.call('XRANGE', stream, id, id)
    if #entry > 0 then
      local fields = entry[1][2]
      for _, extra in ipairs({'dead.message_id', id, 'dead.delivery_count', tostring(count),
          'dead.group', group, 'dead.consumer', owner, 'dead.at_ms', ARGV[11]}) do
        table.insert(fields, extra)
      end
      redis.call('XADD', dead, 'MAXLEN', '~', ARGV[10], '*', unpack(fields))
      dead_lettered = dead_lettered + 1
    end
    redis.call('XACK', stream, group, id)
  elseif owner == consumer or room > 0 then
    if owner ~= consumer then room = room - 1 end
    table.insert(claim, id)
    counts[id] = count + 1
  end
end
local out = {}
if #claim > 0 then
  -- Entries trimmed from the stream meanwhile are dropped from the PEL and not returned.
  local entries = redis.call('XCLAIM', stream, group, consumer, min_idle, unpack(claim))
  for _, e in ipairs(entries) do
    table.insert(out, {e[1], e[2], counts[e[1]]})
  end
end
return {out, dead_lettered, #pending, last}
"""

REPLAY = """
-- Publish dead letters again as new messages and delete them from the dead-letter stream.
-- KEYS[1] stream, KEYS[2] dead-letter stream
-- ARGV: max_len, limit (when no ids are named), ids...
-- Returns {{{dead_letter_id, new_id}...}, {not_found_id...}, remaining}.
local stream, dead = KEYS[1], KEYS[2]
local ids = {}
if #ARGV > 2 then
  for i = 3, #ARGV do table.insert(ids, ARGV[i]) end
else
  for _, e in ipairs(redis.call('XRANGE', dead, '-', '+', 'COUNT', ARGV[2])) do
    table.insert(ids, e[1])
  end
end
local replayed, missing = {}, {}
for _, id in ipairs(ids) do
  local entry = redis.call('XRANGE', dead, id, id)
  if #entry == 0 then
    table.insert(missing, id)
  else
    local fields, keep = entry[1][2], {}
    for j = 1, #fields, 2 do
      if string.sub(fields[j], 1, 5) ~= 'dead.' then
        table.insert(keep, fields[j])
        table.insert(keep, fields[j + 1])
      end
    end
    local new_id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', unpack(keep))
    redis.call('XDEL', dead, id)
    table.insert(replayed, {id, new_id})
  end
end
return {replayed, missing, redis.call('XLEN', dead)}
"""

LEAVE = """
-- Remove a consumer from its group if it holds no pending message (deleting a consumer
-- deletes its pending entries, which would lose them).
-- KEYS[1] stream; ARGV: group, consumer. Returns 1 if removed, 0 if not.
local ok, held = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok or #held > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
