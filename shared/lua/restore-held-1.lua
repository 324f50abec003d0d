#!lua
--[[
  Restores on the replica copies of pending keys (includes/held.lua) read
  from the master (resync-copy-1.lua: DUMP and absolute expiry, with the
  master's sequence at the read), and turns them from pending into marked
  keys, in one step: the commands held back because of them are in the
  copies, and so is every later command up to the copy's sequence, which
  apply-batch-1.lua then skips.

  Guarded like the apply script: nothing happens on a replica being
  resynced or following another log. A key is restored only while it is
  pending and its copy is not older than the last entry held back because
  of it (a consumer that read the copy before that entry was applied, a
  stale one, must not restore it); otherwise it is left as it is.

  Input:
    KEYS[1] applied hash, in the queue db
    ARGV[1] the master's epoch the copy was read under
    ARGV[2] queue db
    ARGV[3] db of the keys
    ARGV[4] the master's sequence the copies reflect
    ARGV[5...] triples key, abs expiry (ms, <= 0 none), DUMP value ('' : the
            key does not exist on the master); at most 2,500 keys a call

  Output (codes: shared/reply-codes.ts):
    {OK, restored, still pending}     still pending: keys whose copy is too old; copy them again
    {OTHER_LOG, replica epoch}        the replica follows another log
    {RESYNCING}                       a resync of the replica is under way or was interrupted
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/held"
--- @include "includes/restore"

local cur = rcall('HMGET', KEYS[1], 'epoch', 'resyncing', 'seq', 'held', 'heldPending')
if cur[2] then return { RESYNCING } end
if cur[1] ~= ARGV[1] then return { OTHER_LOG, cur[1] or '' } end
local queue_db, db = ARGV[2], ARGV[3]
local copy_seq = tonumber(ARGV[4])
local watermark = tonumber(cur[3]) or 0
local held_max = tonumber(cur[4]) or 0
local pending = tonumber(cur[5]) or 0

local restore, marks, restored, stale = {}, {}, 0, 0
for i = 5, #ARGV, 3 do
  local id = held_id(db, ARGV[i])
  local kind, seq = held_parse(rcall('HGET', KEYS[1], id))
  if kind == 'p' then
    if seq <= copy_seq then
      restore[#restore + 1] = i
      marks[#marks + 1] = id
      restored = restored + 1
    else
      stale = stale + 1
    end
  end
end
if restored == 0 then return { OK, 0, stale } end

-- A marker at or below the watermark means nothing: the field goes.
local marker = 'm' .. ARGV[4]
if copy_seq <= watermark then
  rcall('HDEL', KEYS[1], unpack(marks))
else
  local f = {}
  for _, id in ipairs(marks) do
    f[#f + 1] = id
    f[#f + 1] = marker
  end
  rcall('HSET', KEYS[1], unpack(f))
  held_max = math.max(held_max, copy_seq)
end
pending = math.max(0, pending - restored)
if pending == 0 and held_max <= watermark then
  -- Nothing held any more: the fields go, and the apply script pays nothing.
  local names = {}
  for _, name in ipairs(rcall('HKEYS', KEYS[1])) do
    if string.sub(name, 1, 4) == 'held' then names[#names + 1] = name end
  end
  for i = 1, #names, 4000 do rcall('HDEL', KEYS[1], unpack(names, i, math.min(#names, i + 3999))) end
else
  rcall('HSET', KEYS[1], 'held', string.format('%.0f', held_max), 'heldPending', pending)
end

rcall('SELECT', db)
for _, i in ipairs(restore) do
  restore_copy(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
rcall('SELECT', queue_db)
return { OK, restored, stale }
