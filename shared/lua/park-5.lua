#!lua
--[[
  Confirms a batch that holds dead letters like trim-4.lua (what every
  attached replica has leaves the log and the queue's byte count, dead
  letters included) and, in the same step, pushes each dead entry
  (refused by the replica, or not a qsync entry) to the dead-letter list with
  why. An entry thus leaves the log exactly when its dead letter appears;
  a crash before this step leaves both as they were, and the next batch
  reports the same dead letters again (see apply-batch-1.lua).

  A dead letter is its header (one line of JSON: seq, epoch, index, done,
  error, parkedAt) and the raw entry, joined by a newline.

  Input:
    KEYS[1] log list
    KEYS[2] lease
    KEYS[3] status hash
    KEYS[4] dead-letter list
    KEYS[5] meta hash (bytes)
    ARGV[1] lease token
    ARGV[2] how many entries to remove from the head
    ARGV[3] the last of them as read: its length, ':', its first bytes
            (includes/head.lua)
    ARGV[4] replica watermark after the apply
    ARGV[5] when (ms) the consumer confirmed the watermark
    ARGV[6] bytes of those entries, as read
    ARGV[7] the replica's name
    ARGV[8...] for each dead letter: its position among those entries (1-based),
               that entry as read (length, ':', first bytes), header

  Output:
    OK            confirmed and filed
    LEASE_LOST    the lease is not held by this token
    HEAD_CHANGED  the log is not what was applied (nothing changed)
    DETACHED      the replica was detached from the log
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/replicas"
local count = tonumber(ARGV[2])
local name = ARGV[7]
local first, p, b = replica_start(KEYS[5], name)
if not first then return DETACHED end
local ok = check_head(KEYS[1], KEYS[2], ARGV[1], first, count, ARGV[3])
if ok ~= OK then return ok end
local letters = {}
for i = 8, #ARGV, 3 do
  local raw = rcall('LINDEX', KEYS[1], first + tonumber(ARGV[i]) - 1)
  if not is_entry(raw, ARGV[i + 1]) then return HEAD_CHANGED end
  letters[#letters + 1] = ARGV[i + 2] .. '\n' .. raw
end
for _, letter in ipairs(letters) do rcall('RPUSH', KEYS[4], letter) end
advance_replica(KEYS[5], KEYS[1], name, p, b, count, ARGV[6], ARGV[4])
rcall('HSET', KEYS[3], 'watermark', ARGV[4], 'watermarkTs', ARGV[5])
return OK
