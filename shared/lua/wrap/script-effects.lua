--[[
  Runs an application's Lua scripts on the master and logs their effects:
  every write a script makes, in the form the same write sent alone is
  logged (includes/log-rules.lua), appended in the same atomic step. This is
  how Redis 7 itself replicates scripts. One call runs one script, or a
  multi() group of scripts and commands: all the writes of the call make one
  entry, which the replica applies atomically.

  The producer (producer/user-scripts.ts) puts each script's code, unchanged,
  inside a function declared before this part (the first script on the same
  lines as in its source); the locals KEYS, ARGV and redis declared before
  each one shadow the globals for every reference in that code, so that
  redis.call and redis.pcall come here, and qsync_fns lists them. Reads run
  as they are; a write is checked (qsync's own keys and writes qsync cannot
  replicate are refused, as the producer refuses them), then run and logged;
  SELECT is refused: one entry runs in one db.

  Input:
    KEYS[1] meta hash, KEYS[2] log list, KEYS[3] dirty set (in the queue db)
    ARGV[1] db the scripts run in, ARGV[2] queue db
    ARGV[3] '1' for one script (its reply and its error are the call's);
            '0' for a group (an array of replies, errors in place)
    ARGV[4] n, the count of qsync's own key prefixes; ARGV[5 .. 4 + n] them
    ARGV[5 + n ...] the items, in order, each as:
      's', the script's index in qsync_fns, key count k, argument count a,
           k keys, a arguments
      'c', argument count n, log rule, key spec, name, n - 1 arguments: a
           command of the group, as log-write.lua takes it (an empty rule
           for a read)

  Output: for one script, its own reply; an error it raised is raised again
  once its writes before the error are logged (Redis keeps those writes: a
  script has no rollback). When the queue is full under the policy
  'reject', the first write fails with 'QSYNCFULL <cap>' before it runs, as
  redis.call fails.
]]
local redis, KEYS, ARGV = qsync_redis, nil, nil
local rcall = redis.call
--- @include "includes/log-rules"
--- @include "includes/now"
--- @include "includes/entry"
--- @include "includes/view"
--- @include "includes/log-open"
--- @include "includes/log-command"

-- The command table (shared/commands.ts), generated (producer/user-scripts.ts):
-- for each supported write 'rule viewspec'; for each write qsync cannot
-- replicate, the reason.
--- @commands
local function write_entry(name)
  local at = string.find(WRITES, '|' .. name .. ' ', 1, true)
  return at and string.match(WRITES, '^[^|]+', at + #name + 2) or nil
end
local function refusal_reason(name)
  local at = string.find(REFUSED, '|' .. name .. '|', 1, true)
  return at and string.match(REFUSED, '^([^|]*)', at + #name + 2) or nil
end

local meta_key, log_key, dirty_key = qsync_keys[1], qsync_keys[2], qsync_keys[3]
local db, queue_db, single = qsync_argv[1], qsync_argv[2], qsync_argv[3] == '1'
local own_count = tonumber(qsync_argv[4])
local own = {}
for i = 1, own_count do own[i] = qsync_argv[4 + i] end

local resp = 2
local meta, to_dirty, refusal
local out, views = {}, {}

-- An argument as Redis itself turns a Lua number into one: integers in
-- full, other numbers in the shortest form that reads back the same.
local function arg_text(v)
  if type(v) ~= 'number' then return v end
  if v == math.floor(v) and v < 1e17 and v > -1e17 then return string.format('%.0f', v) end
  for digits = 15, 17 do
    local s = string.format('%.' .. digits .. 'g', v)
    if tonumber(s) == v then return s end
  end
  return string.format('%.17g', v)
end

-- A RESP3 reply (after redis.setresp(3)) in the RESP2 form the log rules
-- read: doubles as strings, maps and nested arrays flattened, sets as arrays.
local function resp2(reply)
  if type(reply) ~= 'table' or reply.err or reply.ok then return reply end
  if reply.double then return arg_text(reply.double) end
  local flat = {}
  local function add(v)
    if type(v) == 'table' and not v.err and not v.ok then
      if v.double then
        flat[#flat + 1] = arg_text(v.double)
      else
        for _, x in ipairs(v) do add(x) end
      end
    else
      flat[#flat + 1] = v
    end
  end
  if reply.map then
    for k, v in pairs(reply.map) do
      add(k)
      add(v)
    end
  elseif reply.set then
    for k in pairs(reply.set) do add(k) end
  else
    for _, v in ipairs(reply) do add(v) end
  end
  return flat
end

local function own_key(key)
  if db ~= queue_db then return nil end
  for _, prefix in ipairs(own) do
    if string.sub(key, 1, #prefix) == prefix then return prefix end
  end
  return nil
end

-- The error of a write that may not run, or nil.
local function check(name, cmd, spec)
  if not spec then
    if name == 'select' then return 'ERR qsync: SELECT inside a script is not supported: the writes of one script call are logged as one entry in one db' end
    return 'ERR qsync: ' .. string.upper(name) .. ' inside a script is not supported: ' .. refusal_reason(name)
  end
  if db ~= queue_db then return nil end
  local positions = {}
  local first, last, step = spec_range(string.match(spec, ' (%S+)$'), #cmd - 1, cmd)
  for a = first, last, step do positions[#positions + 1] = a + 1 end
  -- The destination of SORT ... STORE dst and GEORADIUS ... STORE(DIST) dst.
  if name == 'sort' or name == 'georadius' or name == 'georadiusbymember' then
    for a = 3, #cmd - 1 do
      local option = string.upper(cmd[a])
      if option == 'STORE' or option == 'STOREDIST' then positions[#positions + 1] = a + 1 end
    end
  end
  for _, pos in ipairs(positions) do
    local prefix = own_key(cmd[pos])
    if prefix then
      return 'ERR qsync: ' .. string.upper(name) .. ' on ' .. cmd[pos] .. ': keys starting with ' .. prefix .. ' are qsync\'s own; nothing was written'
    end
  end
  return nil
end

-- The queue's state, read at the first write: a script that only reads
-- never touches the queue, and is not stopped by its cap.
-- qsync's own calls read RESP2 replies (a RESP3 null is nil, not false).
local function open_queue()
  if resp == 3 then redis.setresp(2) end
  local err
  meta, err = open_log(meta_key, log_key, queue_db, function() return 1 end)
  if meta then to_dirty = err else refusal = err end
  rcall('SELECT', db)
  if resp == 3 then redis.setresp(3) end
end

local function call(raise, ...)
  local cmd = { ... }
  local name = type(cmd[1]) == 'string' and string.lower(cmd[1]) or nil
  local entry = name and string.find(name, '^[%w_]+$') and write_entry(name)
  if not entry and not (name and (name == 'select' or refusal_reason(name))) then
    if raise then return rcall(...) end
    return redis.pcall(...)
  end
  for i = 1, #cmd do cmd[i] = arg_text(cmd[i]) end
  cmd[1] = name
  local err = check(name, cmd, entry)
  if not err then
    if not meta and not refusal then open_queue() end
    if refusal then err = refusal.err end
  end
  local reply
  if err then
    reply = { err = err }
  else
    local rule, spec = string.match(entry, '^(%S+) (%S+)$')
    if name == 'set' and #cmd == 3 then rule = 'always' end
    reply = log_command(cmd, rule, spec, db, out, views, resp == 3 and resp2 or nil)
  end
  if raise and type(reply) == 'table' and reply.err then error(reply) end
  return reply
end

qsync_shadow.call = function(...) return call(true, ...) end
qsync_shadow.pcall = function(...) return call(false, ...) end
qsync_shadow.setresp = function(v)
  redis.setresp(v)
  resp = v
end
setmetatable(qsync_shadow, { __index = redis })

-- The keys of the logged commands, for the dirty set.
local function touched_keys()
  local keys = {}
  for j, cmd in ipairs(out) do
    local view = views[j]
    if type(view) == 'table' then
      for p = 1, #view, 2 do keys[#keys + 1] = cmd[view[p]] end
    else
      keys[#keys + 1] = cmd[2]
    end
  end
  return keys
end

-- A script's error as Redis would reply it: a Lua error carries its place
-- in the script ('ERR ' first), an error reply does not.
local function error_of(result)
  if type(result) == 'string' and string.match(result, '^user_script:%d+: ') then result = 'ERR ' .. result end
  if type(result) == 'string' then result = { err = result } end
  return result
end

-- Runs one script of the call with its keys and arguments, under RESP2 as
-- every script starts.
local function run_script(fn, keys, args)
  local f = qsync_fns[fn]
  local k, a = f[2], f[3]
  for i = #k, 1, -1 do k[i] = nil end
  for i = #a, 1, -1 do a[i] = nil end
  for i, v in ipairs(keys) do k[i] = v end
  for i, v in ipairs(args) do a[i] = v end
  if resp == 3 then
    redis.setresp(2)
    resp = 2
  end
  local ok, result = pcall(f[1])
  if resp == 3 then
    redis.setresp(2)
    resp = 2
  end
  return ok, result
end

local replies, failed = {}, nil
local i, last = 5 + own_count, #qsync_argv
while i <= last do
  local reply
  if qsync_argv[i] == 's' then
    local fn, nk, na = tonumber(qsync_argv[i + 1]), tonumber(qsync_argv[i + 2]), tonumber(qsync_argv[i + 3])
    local keys, args = {}, {}
    for j = 1, nk do keys[j] = qsync_argv[i + 3 + j] end
    for j = 1, na do args[j] = qsync_argv[i + 3 + nk + j] end
    i = i + 4 + nk + na
    local ok, result = run_script(fn, keys, args)
    if ok then
      reply = result
    else
      reply = error_of(result)
      failed = reply
    end
  else
    local n, rule, spec = tonumber(qsync_argv[i + 1]), qsync_argv[i + 2], qsync_argv[i + 3]
    local cmd = {}
    for j = 1, n do cmd[j] = qsync_argv[i + 3 + j] end
    i = i + n + 4
    if rule == '' then
      reply = redis.pcall(unpack(cmd))
    else
      if not meta and not refusal then open_queue() end
      reply = refusal or log_command(cmd, rule, spec, db, out, views)
    end
  end
  -- nil would end the array of replies: false is Redis's nil too.
  if reply == nil then reply = false end
  replies[#replies + 1] = reply
end

if #out > 0 then
  if to_dirty then
--- @include "includes/dirty"
    record_dirty(meta_key, dirty_key, meta[4], db, queue_db, { out }, touched_keys())
  else
    append_entries(meta_key, log_key, db, queue_db, { out }, { views }, meta[1], meta[2], meta[3])
  end
end
if single then
  if failed then error(failed) end
  return replies[1]
end
return replies
