#!lua
--[[
  Confirms a batch a replica applied: records the replica's new position in
  the log and drops from the head what every attached replica now has
  (includes/replicas.lua), taking their bytes off the queue's byte count;
  only for the consumer that holds the replica's lease and only if the log
  still holds, where the replica reads, what it applied.
  (A batch with dead letters is confirmed by park-5.lua instead.)

  Input:
    KEYS[1] log list
    KEYS[2] lease
    KEYS[3] status hash
    KEYS[4] meta hash (bytes)
    ARGV[1] lease token
    ARGV[2] how many entries were applied
    ARGV[3] the last of them as read: its length, ':', its first bytes
            (includes/head.lua)
    ARGV[4] replica watermark after the apply
    ARGV[5] when (ms) the consumer confirmed the watermark
    ARGV[6] bytes of those entries, as read
    ARGV[7] the replica's name (default: 'default')

  Output:
    OK            confirmed
    LEASE_LOST    the lease is not held by this token
    HEAD_CHANGED  the log is not what was applied (nothing changed)
    DETACHED      the replica was detached from the log
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/replicas"
local count = tonumber(ARGV[2])
local name = ARGV[7] or 'default'
local first, p, b = replica_start(KEYS[4], name)
if not first then return DETACHED end
local ok = check_head(KEYS[1], KEYS[2], ARGV[1], first, count, ARGV[3])
if ok ~= OK then return ok end
advance_replica(KEYS[4], KEYS[1], name, p, b, count, ARGV[6], ARGV[4])
rcall('HSET', KEYS[3], 'watermark', ARGV[4], 'watermarkTs', ARGV[5])
return OK
