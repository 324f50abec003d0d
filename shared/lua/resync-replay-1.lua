#!lua
--[[
  Replays commands of log entries on the replica during a resync
  (consumer/resync.ts decides which commands of each entry to run) and
  records, in the same step, the last entry fully replayed. The replica stays
  marked as resyncing until the resync finishes, so the consumer applies
  nothing meanwhile.
  Input:
    KEYS[1] applied hash, in the queue db
    ARGV[1] queue db
    ARGV[2] seq of the last entry fully replayed by this call
    ARGV[3] its time (ms)
    ARGV[4...] commands, each as: db, argument count n, then n arguments (name first)
  Output:
    {OK, commands run}
    {REFUSED, position of the refused command (1-based), error}
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
local db = nil
local i, run = 4, 0
while i <= #ARGV do
  if ARGV[i] ~= db then
    db = ARGV[i]
    rcall('SELECT', db)
  end
  local n = tonumber(ARGV[i + 1])
  local r = redis.pcall(unpack(ARGV, i + 2, i + 1 + n))
  run = run + 1
  if type(r) == 'table' and r.err then return { REFUSED, run, r.err } end
  i = i + 2 + n
end
rcall('SELECT', ARGV[1])
rcall('HSET', KEYS[1], 'seq', ARGV[2], 'ts', ARGV[3])
return { OK, run }
