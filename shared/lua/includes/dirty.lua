--[[
  The queue's state once a capped log stopped taking entries (policy
  'mark-dirty', see log-write.lua): 'repair-needed' while the keys written
  since are all in the dirty set, 'resync-needed' once more than maxDirty
  keys were (100000 unless set; the same default as consumer/limits.ts).
  Only `qsync limit --clear-repair` removes the state.

  Records the keys of a write that was not queued: '<db>:<key>' for each of
  touched (the keys the writes touch; KEYS[4...] when not given, as the
  log-write script passes them), and for the destination of a
  COPY ... DB n, '<n>:<key>' too (the key is in another db), and every key
  a logged DEL names (a stored result is logged as DEL dst + ZADD dst ...,
  and dst is not among the keys of SORT ... STORE dst or GEORADIUS ...
  STORE dst). A FLUSHDB or FLUSHALL changed keys no set can list: the
  queue goes to 'resync-needed'. groups are the
  commands as they would have been logged; state is the meta hash's state
  as read. Leaves the script in the queue db.
]]
local function record_dirty(meta_key, dirty_key, state, db, queue_db, groups, touched)
  if db ~= queue_db then rcall('SELECT', queue_db) end
  if state == 'resync-needed' then return end
  local members, seen = {}, {}
  local function add(m)
    if not seen[m] then
      seen[m] = true
      members[#members + 1] = m
    end
  end
  if touched then
    for _, key in ipairs(touched) do add(db .. ':' .. key) end
  else
    for i = 4, #KEYS do add(db .. ':' .. KEYS[i]) end
  end
  local flushed = false
  for _, group in ipairs(groups) do
    for _, cmd in ipairs(group) do
      local name = string.lower(cmd[1])
      if name == 'copy' then
        for j = 4, #cmd - 1 do
          if string.lower(cmd[j]) == 'db' then add(cmd[j + 1] .. ':' .. cmd[3]) end
        end
      elseif name == 'del' then
        for j = 2, #cmd do add(db .. ':' .. cmd[j]) end
      elseif name == 'flushdb' or name == 'flushall' then
        flushed = true
      end
    end
  end
  local max = tonumber(rcall('HMGET', meta_key, 'maxDirty')[1]) or 100000
  local n = rcall('SCARD', dirty_key)
  if flushed then
    n = max + 1
  elseif n + #members > max then
    -- Only the keys not recorded yet count.
    for _, has in ipairs(rcall('SMISMEMBER', dirty_key, unpack(members))) do n = n + 1 - has end
  end
  if n > max then
    rcall('HSET', meta_key, 'state', 'resync-needed', 'stateSince', string.format('%.0f', now_ms()))
    return
  end
  rcall('SADD', dirty_key, unpack(members))
  if not state then rcall('HSET', meta_key, 'state', 'repair-needed', 'stateSince', string.format('%.0f', now_ms())) end
end
