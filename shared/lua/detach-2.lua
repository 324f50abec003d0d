#!lua
--[[
  Detaches a replica from the log (qsync replicas detach): the log no
  longer waits for it, and what no attached replica needs leaves it at
  once (includes/replicas.lua). Its consumer then reports resync-needed.

  Input:
    KEYS[1] meta hash
    KEYS[2] log list
    ARGV[1] the replica's name
    ARGV[2] why, in words

  Output:
    1 detached, 0 not attached (unknown, or detached already)
]]
local rcall = redis.call
--- @include "includes/replicas"
local v = rcall('HGET', replicas_key_of(KEYS[1]), ARGV[1])
if not v or not replica_parse(v) then return 0 end
detach_replica(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return 1
