#!lua
--[[
  Replays commands of log entries on the replica during a resync
  (consumer/resync.ts decides which commands of each entry to run) and
  records, in the same step, the last entry fully replayed. The replica stays
  marked as resyncing until the resync finishes, so the consumer applies
  nothing meanwhile.
  Input (the key count first: the keys of the commands may be declared too):
    KEYS[1] applied hash, in the queue db
    KEYS[2...] on a Redis Cluster replica, the keys the commands touch,
            declared so that the node checks them all before the script
            runs (a slot moving between nodes is redirected or waits instead
            of running in part); not read
    ARGV[1] queue db
    ARGV[2] seq of the last entry fully replayed by this call
    ARGV[3] its time (ms)
    ARGV[4...] commands, each as: db, view length v, the command's view (v
            values: position, expiry pairs, see includes/view.lua; v = 0 for
            an entry without views), argument count n, then n arguments
            (name first)
  Each command's keys are first brought to the master's view, as the apply
  script does; a key the master had but the replica lost (it expired here
  first) stops the call before that command, which the resync then copies
  again from the master.
  Output:
    {OK, commands run}
    {REFUSED, position of the refused command (1-based), error}
    {KEY_LOST, position of the command not run (1-based)}: the commands before it ran
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/now"
--- @include "includes/view"
--- @include "includes/align"

local now = nil
local function clock()
  now = now or now_ms()
  return now
end
-- Brings the keys of cmd (run in db) to the master's view of them; false
-- when one the master had is gone here. Leaves db selected.
local function align(cmd, view, db)
  local lost = false
  for v = 1, #view, 2 do
    local pos, want = tonumber(view[v]), tonumber(view[v + 1])
    if want ~= ANY then
      local in_db = key_db(cmd, pos, db)
      if in_db ~= db then rcall('SELECT', in_db) end
      if align_key(rcall, cmd[pos], want, clock) == 'lost' then lost = true end
      if in_db ~= db then rcall('SELECT', db) end
    end
  end
  return not lost
end

local db = nil
local i, run = 4, 0
while i <= #ARGV do
  if ARGV[i] ~= db then
    db = ARGV[i]
    rcall('SELECT', db)
  end
  local v = tonumber(ARGV[i + 1])
  local view = { unpack(ARGV, i + 2, i + 1 + v) }
  i = i + 2 + v
  local n = tonumber(ARGV[i])
  if v > 0 and not align({ unpack(ARGV, i + 1, i + n) }, view, db) then return { KEY_LOST, run + 1 } end
  local r = redis.pcall(unpack(ARGV, i + 1, i + n))
  run = run + 1
  if type(r) == 'table' and r.err then return { REFUSED, run, r.err } end
  i = i + 1 + n
end
rcall('SELECT', ARGV[1])
rcall('HSET', KEYS[1], 'seq', ARGV[2], 'ts', ARGV[3])
return { OK, run }
