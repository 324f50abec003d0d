#!lua
--[[
  Writes the copy of the master's keys on the replica during a resync
  (consumer/copy/copier.ts). Four operations:
    restore: ARGV[3...] triples key, abs expiry (ms, <= 0 none), DUMP value
             ('' deletes the key: it does not exist on the master)
    packed:  ARGV[3] the same triples packed by the master (resync-read-1.lua)
    append:  ARGV[3] temporary key, ARGV[4] type, ARGV[5] '1' for the first
             chunk (starts the key afresh), ARGV[6...] a chunk as read from
             the master: HSCAN, SSCAN or ZSCAN pairs, LRANGE values, or one
             GETRANGE piece of a string
    finish:  ARGV[3] temporary key, ARGV[4] key, ARGV[5] abs expiry (ms, <= 0 none):
             the temporary key replaces the key
  Input (the key count first):
    KEYS on a Redis Cluster replica, the keys written (the temporary key
         included), declared so that the node checks them all before the
         script runs; none otherwise; not read
    ARGV[1] db of the keys
    ARGV[2] operation
  Output: the number of keys or members written
]]
local rcall = redis.call
--- @include "includes/restore"
rcall('SELECT', ARGV[1])
local op = ARGV[2]
if op == 'restore' then
  for i = 3, #ARGV, 3 do
    restore_copy(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  end
  return (#ARGV - 2) / 3
end
if op == 'packed' then
  local copies = cmsgpack.unpack(ARGV[3])
  for i = 1, #copies, 3 do
    restore_copy(copies[i], string.format('%.0f', copies[i + 1]), copies[i + 2])
  end
  return #copies / 3
end
if op == 'append' then
  local tmp, t = ARGV[3], ARGV[4]
  if ARGV[5] == '1' then rcall('DEL', tmp) end
  local n = #ARGV - 5
  if n == 0 then return 0 end
  if t == 'hash' then
    rcall('HSET', tmp, unpack(ARGV, 6))
  elseif t == 'set' then
    rcall('SADD', tmp, unpack(ARGV, 6))
  elseif t == 'list' then
    rcall('RPUSH', tmp, unpack(ARGV, 6))
  elseif t == 'zset' then
    -- ZSCAN gives member, score; ZADD takes score, member.
    local args = {}
    for i = 6, #ARGV, 2 do
      args[#args + 1] = ARGV[i + 1]
      args[#args + 1] = ARGV[i]
    end
    rcall('ZADD', tmp, unpack(args))
  elseif t == 'string' then
    rcall('APPEND', tmp, ARGV[6])
  else
    return redis.error_reply('ERR resync-restore: no chunked copy for type ' .. t)
  end
  return n
end
if op == 'finish' then
  rcall('RENAME', ARGV[3], ARGV[4])
  if tonumber(ARGV[5]) > 0 then rcall('PEXPIREAT', ARGV[4], ARGV[5]) end
  return 1
end
return redis.error_reply('ERR resync-restore: unknown operation ' .. tostring(op))
