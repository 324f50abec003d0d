--[[
  The queue's state, read in queue_db before anything is written: one HMGET
  of the meta hash, whatever db the connection is in. Returns the meta
  fields (seq, ts, bytes, state, maxEntries, maxBytes) and whether the
  writes go to the dirty set instead of the log; or nil and the error reply
  to return when the queue is full under the policy 'reject', or when the
  queue is fenced (qsync failover: the meta hash's 'fenced' names the new
  master, the error is 'QSYNCFENCED <new master>', whatever the call holds)
  (nothing may run then). refused() says how many writes a full queue's
  refusal counts, for the metrics; it is called only then. A call that holds no writes passes no
  refused(): the cap does not stop it. Leaves the script in queue_db.
]]
local function open_log(meta_key, log_key, queue_db, refused)
  local selected = redis.pcall('SELECT', queue_db)
  if type(selected) == 'table' and selected.err then return nil, selected end
  -- Where qsync's own keys are, for a flush that must keep them (includes/keyspace-rules.lua).
  QUEUE.db, QUEUE.prefix = queue_db, string.match(meta_key, '^([^:]*):')
  local meta = rcall('HMGET', meta_key, 'seq', 'ts', 'bytes', 'state', 'maxEntries', 'maxBytes', 'fenced')
  -- A fenced master (qsync failover) refuses every write, naming the new master.
  if meta[7] then return nil, redis.error_reply('QSYNCFENCED ' .. meta[7]) end
  local dirty = meta[4] ~= false
  -- The policy is read only once the log is full: most writes never need it.
  if not dirty and refused and (meta[5] or meta[6]) then
    local max_entries, max_bytes, cap = tonumber(meta[5]), tonumber(meta[6]), nil
    if max_entries and rcall('LLEN', log_key) >= max_entries then
      cap = 'max entries ' .. meta[5]
    elseif max_bytes and (tonumber(meta[3]) or 0) >= max_bytes then
      cap = 'max bytes ' .. meta[6]
    end
    if cap then
      local policy = rcall('HMGET', meta_key, 'policy')[1]
      if policy == 'detach-slowest' then
        -- The replica holding the log past its cap is detached (includes/replicas.lua,
        -- defined here, the only place that needs it: a script rebuilds every
        -- function it defines on each call).
--- @include "includes/replicas"
        meta[3] = make_room(meta_key, log_key, max_entries, max_bytes, cap)
      elseif policy ~= 'mark-dirty' then
        rcall('HINCRBY', meta_key, 'refused', refused())
        return nil, redis.error_reply('QSYNCFULL ' .. cap)
      else
        dirty = true
      end
    end
  end
  return meta, dirty
end
