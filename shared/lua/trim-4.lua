#!lua
--[[
  Removes applied entries from the head of the log, only for the consumer
  that holds the lease and only if the head is still what it applied, and
  takes their bytes off the queue's byte count.
  (A batch with dead letters is confirmed by park-5.lua instead.)

  Input:
    KEYS[1] log list
    KEYS[2] lease
    KEYS[3] status hash
    KEYS[4] meta hash (bytes)
    ARGV[1] lease token
    ARGV[2] how many entries to remove from the head
    ARGV[3] the last of them as read: its length, ':', its first bytes
            (includes/head.lua)
    ARGV[4] replica watermark after the apply
    ARGV[5] when (ms) the consumer confirmed the watermark
    ARGV[6] bytes of those entries, as read

  Output:
    OK            trimmed
    LEASE_LOST    the lease is not held by this token
    HEAD_CHANGED  the head of the log is not what was applied (nothing trimmed)
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/head"
local count = tonumber(ARGV[2])
local ok = check_head(KEYS[1], KEYS[2], ARGV[1], count, ARGV[3])
if ok ~= OK then return ok end
remove_head(KEYS[1], KEYS[4], KEYS[3], count, ARGV[6], ARGV[4], ARGV[5])
return OK
