#!lua
--[[
  The log-write script (log-write.lua) for the writes most applications send:
  commands logged as they were sent, always (SET k v, INCR, HSET, LPUSH,
  ZADD...) or only when their reply says they changed something (SADD, HDEL,
  ZREM...). Same input, same output, same entries as log-write.lua; what it
  leaves out is what makes that script cost several times a plain write on
  every call: the rules that rewrite a command into its deterministic form
  (built on every call of a script that defines them) and the dirty set.
  Each entry is packed from its parts (see below), and a run of commands of
  the same kind sends their name, rule and key spec once.

  It runs nothing and returns the error 'QSYNCSLOW' when the queue is marked
  dirty (policy 'mark-dirty' met its cap): the producer then sends the same
  call to log-write.lua, which records the keys. A full queue under 'reject'
  and a fenced queue give the same errors as log-write.lua.

  Input:
    KEYS[1] meta hash, in the queue db
    KEYS[2] log list, in the queue db
    ARGV[1] db the writes run in
    ARGV[2] queue db
    ARGV[3] '1' for one command, its reply returned as it is; 'b' for a
            batch of independent writes, each logged as its own entry, an
            array of replies returned (errors in place), or the status OK
            alone when every reply is OK (a run of SETs)
    ARGV[4...] the commands, each as: argument count n (name included),
            log rule ('always' or 'changed'), where its keys are
            (includes/view.lua), name, n - 1 arguments; or, for a command
            with the same rule, key spec and name as the one before it,
            -n and its n - 1 arguments
]]
local rcall = redis.call
--- @include "includes/now"
--- @include "includes/view"
--- @include "includes/changed"
--- @include "includes/exact-integer"
-- Where qsync's own keys are, for the flushes of log-write.lua: filled by
-- open_log, unused here.
local QUEUE = {}
--- @include "includes/log-open"

local db, queue_db = ARGV[1], ARGV[2]
local meta, dirty = open_log(KEYS[1], KEYS[2], queue_db, function()
  if ARGV[3] ~= 'b' then return 1 end
  local refused, at = 0, 4
  while at <= #ARGV do
    refused = refused + 1
    local n = tonumber(ARGV[at])
    at = at + (n < 0 and -n or n + 3)
  end
  return refused
end)
if not meta then return dirty end
if dirty then return redis.error_reply('QSYNCSLOW marked dirty') end

if db ~= queue_db then
  local selected = redis.pcall('SELECT', db)
  if type(selected) == 'table' and selected.err then return selected end
end

-- Each entry is written as the bytes cmsgpack.pack gives the entry table of
-- includes/entry.lua, { 1, seq, ts, db, { cmd }, prev ts, { view } }, but
-- joined from its parts: packing the table costs more than the write itself,
-- and a value is copied once, into the entry.
local pack = cmsgpack.pack
local sizes = {}
-- The msgpack header of a string of n bytes, as cmsgpack writes it.
local function str_header(n)
  local h = sizes[n]
  if h then return h end
  if n < 32 then
    h = string.char(160 + n)
  elseif n < 256 then
    h = '\217' .. string.char(n)
  elseif n < 65536 then
    h = '\218' .. string.char(math.floor(n / 256), n % 256)
  else
    h = '\219' .. string.char(math.floor(n / 16777216), math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  end
  sizes[n] = h
  return h
end
local function array_header(n)
  if n < 16 then return string.char(144 + n) end
  if n < 65536 then return '\220' .. string.char(math.floor(n / 256), n % 256) end
  return '\221' .. string.char(math.floor(n / 16777216), math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

local ts, time = now_ms()
local seq, queued = tonumber(meta[1]) or 0, tonumber(meta[3]) or 0
local first = seq + 1
-- The parts every entry of this call shares: ts and db; the time of the
-- entry before, which is ts from the second entry on.
local stamp, link = pack(ts, tonumber(db)), pack(tonumber(meta[2]) or 0)
local same_link = pack(ts)

local pcall, unpack = redis.pcall, unpack
local replies, entries = {}, {}
local i, k, last = 4, 0, #ARGV
local n, rule, spec, a
local all_ok = true
while i <= last do
  -- args: where the arguments after the name start.
  local args = i + 1
  n = tonumber(ARGV[i])
  if n < 0 then
    n = -n
  else
    rule, spec, a = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    args = i + 4
  end
  i = args + n - 1
  -- A command of up to 4 arguments (name included) runs and is packed from
  -- locals: a table for it costs more than the write. Past its n, b, c, d
  -- hold the next command's arguments, never read.
  local b, c, d = ARGV[args], ARGV[args + 1], ARGV[args + 2]
  local cmd
  if n > 4 or n < 2 or (spec ~= '1w' and spec ~= '1') then
    cmd = { a }
    for j = 2, n do cmd[j] = ARGV[args + j - 2] end
  end
  k = k + 1
  -- The view of the key before the write (includes/view.lua); the two
  -- common specs without building a table for take_view.
  local view, reply
  if spec == '1w' then
    view = FIRST_KEY_ANY
  elseif spec == '1' then
    view = { 2, rcall('PEXPIRETIME', b) }
  else
    view = take_view(cmd, spec, db)
  end
  if cmd then
    reply = pcall(unpack(cmd))
  elseif n == 2 then
    reply = pcall(a, b)
  elseif n == 3 then
    reply = pcall(a, b, c)
  else
    reply = pcall(a, b, c, d)
  end
  if not (type(reply) == 'table' and reply.err) then
    if rule == 'always' or changed(reply) then
      seq = seq + 1
      -- The most common view, FIRST_KEY_ANY (0), needs no packing.
      local v = view == FIRST_KEY_ANY and '\145\0' or pack({ view })
      local at, entry = pack(seq), nil
      if n == 2 then
        entry = '\151\1' .. at .. stamp .. '\145\146' .. str_header(#a) .. a .. str_header(#b) .. b .. link .. v
      elseif n == 3 then
        entry = '\151\1' .. at .. stamp .. '\145\147' .. str_header(#a) .. a .. str_header(#b) .. b .. str_header(#c) .. c .. link .. v
      elseif n == 4 then
        entry = '\151\1' .. at .. stamp .. '\145\148' .. str_header(#a) .. a .. str_header(#b) .. b .. str_header(#c) .. c .. str_header(#d) .. d .. link .. v
      else
        local parts = { '\151\1', at, stamp, '\145', array_header(n) }
        for j = 1, n do
          parts[#parts + 1] = str_header(#cmd[j])
          parts[#parts + 1] = cmd[j]
        end
        parts[#parts + 1] = link
        parts[#parts + 1] = v
        entry = table.concat(parts)
      end
      link = same_link
      queued = queued + #entry
      entries[#entries + 1] = entry
    end
    if type(reply) == 'number' and (reply >= INEXACT or reply <= -INEXACT) then reply = exact_integer(cmd or { a, b, c, d }, reply) end
  end
  replies[k] = reply
  if all_ok and not (type(reply) == 'table' and reply.ok == 'OK') then all_ok = false end
end

if #entries > 0 then
  if db ~= queue_db then rcall('SELECT', queue_db) end
  -- As append_entries (includes/entry.lua) writes the meta hash.
  rcall('HSET', KEYS[1], 'seq', string.format('%.0f', seq), 'ts', string.format('%.0f', ts), 'bytes', queued)
  if first == 1 then rcall('HSETNX', KEYS[1], 'epoch', time[1] .. '.' .. time[2]) end
  rcall('RPUSH', KEYS[2], unpack(entries))
end

if ARGV[3] == '1' then return replies[1] end
if all_ok then return redis.status_reply('OK') end
return replies
