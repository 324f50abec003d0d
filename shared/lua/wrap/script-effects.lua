--[[
  Runs an application's Lua script on the master and logs its effects: every
  write the script makes, in the form the same write sent alone is logged
  (includes/log-rules.lua), all of them as one entry, appended in the same
  atomic step. This is how Redis 7 itself replicates scripts.

  The producer (producer/user-scripts.ts) puts the user's code, unchanged,
  inside a function declared before this part, on the same lines as in the
  original (a shebang line stays first); the locals KEYS, ARGV and redis it
  declares first shadow the globals for every reference in that code, so
  that redis.call and redis.pcall come here. Reads run as they are; a write
  is checked (qsync's own keys and writes qsync cannot replicate are
  refused, as the producer refuses them), then run and logged; SELECT is
  refused: one entry runs in one db.

  Input:
    KEYS[1] meta hash, KEYS[2] log list, KEYS[3] dirty set (in the queue db)
    KEYS[4...] the script's own KEYS
    ARGV[1] db the script runs in, ARGV[2] queue db
    ARGV[3] n, the count of qsync's own key prefixes; ARGV[4 .. 3 + n] them
    ARGV[4 + n ...] the script's own ARGV

  Output: the script's own reply. An error the script raised is raised
  again once its writes before the error are logged (Redis keeps those
  writes: a script has no rollback). When the queue is full under the policy
  'reject', the script's first write fails with 'QSYNCFULL <cap>' before it
  runs, as redis.call fails.
]]
local redis = qsync_redis
local rcall = redis.call
--- @include "includes/log-rules"
--- @include "includes/now"
--- @include "includes/entry"
--- @include "includes/view"
--- @include "includes/log-open"
--- @include "includes/log-command"

-- The command table (shared/commands.ts), generated: for each supported
-- write 'rule viewspec'; for each write qsync cannot replicate, the reason.
--- @commands

local meta_key, log_key, dirty_key = qsync_keys[1], qsync_keys[2], qsync_keys[3]
local db, queue_db = qsync_argv[1], qsync_argv[2]
local own_count = tonumber(qsync_argv[3])
local own = {}
for i = 1, own_count do own[i] = qsync_argv[3 + i] end
for i = 4, #qsync_keys do KEYS[i - 3] = qsync_keys[i] end
for i = 4 + own_count, #qsync_argv do ARGV[i - 3 - own_count] = qsync_argv[i] end

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
  if name == 'select' then return 'ERR qsync: SELECT inside a script is not supported: the writes of one script call are logged as one entry in one db' end
  local reason = REFUSED[name]
  if reason then return 'ERR qsync: ' .. string.upper(name) .. ' inside a script is not supported: ' .. reason end
  if not spec then return nil end
  local first, last, step = spec_range(string.match(spec, ' (%S+)$'), #cmd - 1, cmd)
  for a = first, last, step do
    local prefix = own_key(cmd[a + 1])
    if prefix then
      return 'ERR qsync: ' .. string.upper(name) .. ' on ' .. cmd[a + 1] .. ': keys starting with ' .. prefix .. ' are qsync\'s own; nothing was written'
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
  local entry = name and WRITES[name]
  if not entry and not (name and (REFUSED[name] or name == 'select')) then
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

local ok, result = pcall(qsync_user)
if #out > 0 then
  if resp == 3 then redis.setresp(2) end
  if to_dirty then
--- @include "includes/dirty"
    record_dirty(meta_key, dirty_key, meta[4], db, queue_db, { out }, touched_keys())
  else
    append_entries(meta_key, log_key, db, queue_db, { out }, { views }, meta[1], meta[2], meta[3])
  end
end
if not ok then
  -- A Lua error carries its place in the script; an error reply does not.
  if type(result) == 'string' and string.match(result, '^user_script:%d+: ') then result = 'ERR ' .. result end
  if type(result) == 'string' then result = { err = result } end
  error(result)
end
return result
