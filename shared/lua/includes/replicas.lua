--[[
  Several replicas read one log (consumer/replicas/): the master keeps an
  entry until every attached replica has it.

  The replicas hash (`<prefix>:<queue>:replicas`, beside the meta hash) holds
  for each attached replica name '<position>:<byte position>:<seq>': how many
  entries of the log it confirmed since the log began, the bytes of those
  entries, and its watermark. A detached replica holds
  'detached:<ms>:<why>': the log no longer waits for it. The meta hash counts
  what left the head of the log ('trimmed' entries, 'trimmedBytes'), so that
  a position is found in the list as position - trimmed. A replica that is
  not in the hash reads from the head: a queue from before names, with its
  one consumer, works as it did.
]]
--- @include "includes/now"
--- @include "includes/head"

-- The replicas hash of the queue whose meta hash is meta_key.
local function replicas_key_of(meta_key)
  return string.sub(meta_key, 1, -5) .. 'replicas'
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- A replica's position, byte position and seq; nil for a detached one.
local function replica_parse(v)
  local p, b, s = string.match(v, '^(%d+):(%d+):(%d+)$')
  if not p then return nil end
  return tonumber(p), tonumber(b), tonumber(s)
end

-- Entries and bytes that left the head of the log since it began.
local function log_start(meta_key)
  local m = rcall('HMGET', meta_key, 'trimmed', 'trimmedBytes')
  return tonumber(m[1]) or 0, tonumber(m[2]) or 0
end

-- Where replica name reads: the offset in the list of the first entry it
-- has not confirmed, its position and its byte position. Nothing for a
-- detached replica, or one whose entries left the log.
local function replica_start(meta_key, name)
  local trimmed, trimmed_bytes = log_start(meta_key)
  local v = rcall('HGET', replicas_key_of(meta_key), name)
  if not v then return 0, trimmed, trimmed_bytes end
  local p, b = replica_parse(v)
  if not p or p < trimmed then return nil end
  return p - trimmed, p, b
end

-- Takes the entries before position upto (bytes up to byte position
-- upto_bytes) off the head of the log and off the queue's byte count.
local function drop_head(meta_key, log_key, upto, upto_bytes)
  local trimmed, trimmed_bytes = log_start(meta_key)
  if upto <= trimmed then return end
  rcall('LTRIM', log_key, upto - trimmed, -1)
  release_bytes(meta_key, log_key, math.max(0, upto_bytes - trimmed_bytes))
  rcall('HSET', meta_key, 'trimmed', fmt(upto), 'trimmedBytes', fmt(upto_bytes))
end

-- Drops every entry: no attached replica needs them.
local function drop_log(meta_key, log_key)
  local trimmed, trimmed_bytes = log_start(meta_key)
  local bytes = tonumber(rcall('HGET', meta_key, 'bytes')) or 0
  drop_head(meta_key, log_key, trimmed + rcall('LLEN', log_key), trimmed_bytes + bytes)
end

-- The attached replica furthest behind: its name, position and byte position.
local function slowest(replicas_key)
  local all = rcall('HGETALL', replicas_key)
  local name, min_p, min_b = nil, nil, nil
  for i = 1, #all, 2 do
    local p, b = replica_parse(all[i + 1])
    if p and (not min_p or p < min_p) then name, min_p, min_b = all[i], p, b end
  end
  return name, min_p, min_b, #all > 0
end

-- Drops from the head of the log what no attached replica still needs. A
-- log no replica ever attached to is kept for the first one to come.
local function settle_log(meta_key, log_key)
  local name, p, b, any = slowest(replicas_key_of(meta_key))
  if name then
    drop_head(meta_key, log_key, p, b)
  elseif any then
    drop_log(meta_key, log_key)
  end
end

-- Replica name confirmed count more entries (bytes of them) from position
-- p (byte position b): records it with its watermark, and drops what every
-- attached replica now has.
local function advance_replica(meta_key, log_key, name, p, b, count, bytes, watermark)
  rcall('HSET', replicas_key_of(meta_key), name, fmt(p + count) .. ':' .. fmt(b + tonumber(bytes)) .. ':' .. watermark)
  settle_log(meta_key, log_key)
end

-- The log no longer waits for replica name (why: in words).
local function detach_replica(meta_key, log_key, name, why)
  rcall('HSET', replicas_key_of(meta_key), name, 'detached:' .. fmt(now_ms()) .. ':' .. why)
  settle_log(meta_key, log_key)
end

-- Under the cap's policy 'detach-slowest': detaches the replicas furthest
-- behind until the log is under its cap (cap: in words), or drops the whole
-- log when no replica is attached. Returns the queue's byte count after.
local function make_room(meta_key, log_key, max_entries, max_bytes, cap)
  local function full()
    local bytes = tonumber(rcall('HGET', meta_key, 'bytes')) or 0
    return (max_entries and rcall('LLEN', log_key) >= max_entries) or (max_bytes and bytes >= max_bytes)
  end
  while full() do
    local name = slowest(replicas_key_of(meta_key))
    if name then
      detach_replica(meta_key, log_key, name, 'it held the log at its cap (' .. cap .. ')')
    else
      drop_log(meta_key, log_key)
      break
    end
  end
  return rcall('HGET', meta_key, 'bytes')
end
