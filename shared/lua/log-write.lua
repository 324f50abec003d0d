#!lua
--[[
  Runs writes on the master and appends their deterministic form to the log,
  in one atomic step. A write that fails or changes nothing logs nothing.

  A queue may be capped (`qsync limit`, consumer/limits.ts: maxEntries,
  maxBytes, policy, maxDirty in the meta hash, read by every call, so every
  producer obeys a change at once). At or over a cap, under the policy
  'reject' (the default) nothing runs and the reply is the error
  'QSYNCFULL <cap>', which the producer turns into a QueueFullError. Under
  'mark-dirty' the writes run but are not logged: the keys they touch are
  recorded in the dirty set instead (includes/dirty.lua), and so are those of
  every later write while the meta hash has a state, even once the log
  drained, so that the replica never gets an entry for a key whose earlier
  writes it missed.

  Input:
    KEYS[1] meta hash (seq, ts, epoch, bytes; the cap and state), in the queue db
    KEYS[2] log list, in the queue db
    KEYS[3] dirty set, in the queue db
    KEYS[4...] the keys the writes touch (recorded under 'mark-dirty')
    ARGV[1] db the writes run in
    ARGV[2] queue db
    ARGV[3] '1' for one command (its reply is returned as it is); '0' for a
            group, logged as one entry (an array of replies is returned,
            errors in place); 'b' for a batch of independent writes, each
            logged as its own entry (replies as for a group)
    ARGV[4...] the commands, each as: argument count n, log rule (from the
            command table in shared/commands.ts), where its keys are (the
            compact form of viewSpec in shared/commands.ts), name, n - 1
            arguments. An empty rule marks a read inside a group (the
            producer refuses every unsupported write before sending): it
            runs in place and logs nothing.

  Each logged command carries the master's view of its keys just before it
  ran (includes/view.lua): the replica brings its own keys to that view
  before it applies the command, so that expiry is decided by the master's
  clock, at the time of the write.

  Output:
    the reply of the write, or the array of replies of the group; or the
    error 'QSYNCFULL <cap>' when the queue is full under 'reject' (counted
    in the meta hash's 'refused'). An integer reply past 2^53, which a Lua
    number cannot hold exactly (INCRBY and the like on a big counter), is
    returned as the digits of the stored value instead, which the producer
    turns back into the integer reply (producer/exact-integers.ts).
]]
local rcall = redis.call
--- @include "includes/log-rules"
--- @include "includes/now"
--- @include "includes/entry"
--- @include "includes/view"
--- @include "includes/log-open"
--- @include "includes/log-command"

--- @include "includes/exact-integer"

local db, queue_db = ARGV[1], ARGV[2]
local batch = ARGV[3] == 'b'
-- The queue's state first, before anything is written. A call that holds
-- writes (their keys follow the first three) may meet the cap: one refusal
-- for a group, one a write for a batch.
local meta, dirty = open_log(KEYS[1], KEYS[2], queue_db, #KEYS > 3 and function()
  if not batch then return 1 end
  local refused, at = 0, 4
  while at <= #ARGV do
    refused = refused + 1
    at = at + tonumber(ARGV[at]) + 3
  end
  return refused
end or nil)
if not meta then return dirty end

-- Run the writes in the db the entry names, and refuse before writing
-- anything when that db does not exist.
if db ~= queue_db then
  local selected = redis.pcall('SELECT', db)
  if type(selected) == 'table' and selected.err then return selected end
end

-- Each command runs as soon as it is read (no table of them to build).
-- A batch closes an entry after each command; a group makes one entry.
-- views[i] is the view of out[i] (includes/view.lua).
local replies = {}
local groups, group_views = {}, {}
local out, views = {}, {}
local i, k, last = 4, 0, #ARGV
while i <= last do
  local n, rule, spec = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  local cmd = {}
  for j = 1, n do cmd[j] = ARGV[i + 2 + j] end
  i = i + n + 3
  k = k + 1
  if rule == '' then
    replies[k] = redis.pcall(unpack(cmd))
  else
    replies[k] = exact_integer(cmd, log_command(cmd, rule, spec, db, out, views))
  end
  if batch and #out > 0 then
    groups[#groups + 1] = out
    group_views[#group_views + 1] = views
    out, views = {}, {}
  end
end
if #out > 0 then
  groups[#groups + 1] = out
  group_views[#group_views + 1] = views
end

-- A call that changed nothing is neither queued nor recorded.
if #groups > 0 then
  if dirty then
    -- Defined here, the only place that needs it: a script rebuilds every
    -- function it defines on each call.
--- @include "includes/dirty"
    record_dirty(KEYS[1], KEYS[3], meta[4], db, queue_db, groups)
  else
    append_entries(KEYS[1], KEYS[2], db, queue_db, groups, group_views, meta[1], meta[2], meta[3])
  end
end

if ARGV[3] == '1' then return replies[1] end
return replies
