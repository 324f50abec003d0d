--[[
  FLUSHDB and FLUSHALL that keep qsync's own keys: those under '<prefix>:'
  and '<prefix>-jobs:' in the queue db (shared/keys.ts ownKeyPrefixes), on
  the master (the log, the meta hash...) as on the replica (the watermark,
  held keys...). The other dbs, and the queue db when the flush names none
  of its keys, are flushed natively.

  The db is always flushed ASYNC, whatever the command said: inside a
  script a synchronous flush of a big db would hold the server for about a
  second per million keys, while ASYNC empties it at once and frees the
  memory in the background. The data is gone either way.

  In the queue db, qsync's keys are found with one KEYS pass (about 0.3 s
  per million keys in that db; a SCAN loop from Lua is three times slower),
  copied (DUMP, with their absolute expiry), and put back after the flush.
  A queue db that holds only qsync's keys costs nothing but that copy.
]]
-- qsync's keys in the selected db: { key, absolute expiry (or -1), DUMP } each.
local function own_keys(prefix)
  local kept = {}
  -- One pattern for both prefixes: the common start, each name checked after.
  local pattern = string.gsub(prefix, '[%*%?%[%]\\]', '\\%0') .. '*'
  for _, key in ipairs(rcall('KEYS', pattern)) do
    local rest = string.sub(key, #prefix + 1, #prefix + 6)
    if string.sub(rest, 1, 1) == ':' or rest == '-jobs:' then
      local value = rcall('DUMP', key)
      if value then kept[#kept + 1] = { key, rcall('PEXPIRETIME', key), value } end
    end
  end
  return kept
end

-- Writes back the keys own_keys copied, in the selected db.
local function put_back(kept)
  for _, k in ipairs(kept) do
    if k[2] > 0 then
      rcall('RESTORE', k[1], string.format('%.0f', k[2]), k[3], 'ABSTTL', 'REPLACE')
    else
      rcall('RESTORE', k[1], '0', k[3], 'REPLACE')
    end
  end
end

-- Runs FLUSHDB (in db) or FLUSHALL (name, lower case) keeping qsync's keys
-- under prefix in queue_db (dbs as strings). Returns the flush's reply, an
-- error as a table; leaves db selected.
local function flush_keeping(name, db, queue_db, prefix)
  if name ~= 'flushall' and db ~= queue_db then return redis.pcall(name, 'ASYNC') end
  if db ~= queue_db then rcall('SELECT', queue_db) end
  local kept = own_keys(prefix)
  local reply = redis.pcall(name, 'ASYNC')
  if not (type(reply) == 'table' and reply.err) then put_back(kept) end
  if db ~= queue_db then rcall('SELECT', db) end
  return reply
end
