#!lua
--[[
  Takes or renews the consumer lease and records the holder's heartbeat.

  Input:
    KEYS[1] lease
    KEYS[2] status hash
    ARGV[1] token (consumer id)
    ARGV[2] lease time (ms)
    ARGV[3] holder description (host and pid)

  Output:
    {1, 0}          taken or renewed
    {0, pttl, holder token}  held by another consumer for pttl more ms
]]
local rcall = redis.call
--- @include "includes/now"
local cur = rcall('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return { 0, rcall('PTTL', KEYS[1]), cur }
end
rcall('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local now = string.format('%.0f', now_ms())
if not cur then
  rcall('HSET', KEYS[2], 'consumer', ARGV[1], 'holder', ARGV[3], 'since', now)
end
rcall('HSET', KEYS[2], 'heartbeat', now)
return { 1, 0 }
