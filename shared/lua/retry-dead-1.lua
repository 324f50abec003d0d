#!lua
--[[
  Applies the entry of a dead letter on the replica (`qsync dlq retry`),
  after the commands already done, and records the progress in the same
  step. The caller removes the dead letter from the master only after this
  reports success, then deletes the progress; a retry repeated after a crash
  in between finds every command done and applies nothing twice.

  The progress lives in field 'retry:<epoch>:<seq>' of the applied hash. The
  first retry starts from the letter's own count of commands done (what the
  consumer's apply had run when it parked the entry).

  Input:
    KEYS[1] applied hash, in the queue db
    ARGV[1] queue db
    ARGV[2] the dead letter's epoch
    ARGV[3] commands done when the entry was parked
    ARGV[4] the raw entry

  Output:
    {OK, applied now}                 every command is applied
    {OTHER_LOG, replica epoch}        the replica follows another log
    {NOT_AN_ENTRY}                    not a qsync entry
    {REFUSED, index, error, done}     the replica refused command index (0: the entry's db);
                                      done: commands applied so far
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/decode"

local e = decode_entry(ARGV[4])
if not e then return { NOT_AN_ENTRY } end
local cur = rcall('HMGET', KEYS[1], 'epoch')[1]
if cur ~= ARGV[2] then return { OTHER_LOG, cur or '' } end
local field = 'retry:' .. ARGV[2] .. ':' .. string.format('%.0f', e[2])
local done = tonumber(rcall('HMGET', KEYS[1], field)[1] or ARGV[3])

local function save(n)
  rcall('SELECT', ARGV[1])
  rcall('HSET', KEYS[1], field, n)
end

local r = redis.pcall('SELECT', e[4])
if type(r) == 'table' and r.err then return { REFUSED, 0, r.err, done } end
local cmds = e[5]
for j = done + 1, #cmds do
  r = redis.pcall(unpack(cmds[j]))
  if type(r) == 'table' and r.err then
    save(j - 1)
    return { REFUSED, j, r.err, j - 1 }
  end
end
save(#cmds)
return { OK, #cmds - done }
