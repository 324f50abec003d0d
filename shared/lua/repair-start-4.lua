#!lua
--[[
  Starts a repair of the replica after writes went unqueued under the
  'mark-dirty' policy (consumer/repair.ts), in one step on the master: the
  dirty set becomes the repair set and the queue's state is removed, so that
  every write from here on is queued again, after entry 'seq'. The repair
  copies the keys of the repair set; every write to them up to 'seq' is in
  those copies, queued or not.
  A repair set left by an interrupted repair is taken up again, with the keys
  recorded dirty since added to it.
  Input:
    KEYS[1] meta hash, KEYS[2] dirty set, KEYS[3] repair set, KEYS[4] log;
    all in the queue db
  Output:
    {OK, seq, ts, epoch, keys in the repair set}
    {NOTHING_TO_REPAIR}: no state, no repair set
    {TOO_MANY_DIRTY}: more than maxDirty keys went unqueued; only a resync can help
    {LOG_AT_CAP, cap}: the log is still at its cap; a repair now would only
         fill the dirty set again
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
local meta = rcall('HMGET', KEYS[1], 'seq', 'ts', 'epoch', 'state', 'maxEntries', 'maxBytes', 'bytes')
local state = meta[4]
if state == 'resync-needed' then return { TOO_MANY_DIRTY } end
local resuming = rcall('EXISTS', KEYS[3]) == 1
if not state and not resuming then return { NOTHING_TO_REPAIR } end
if state then
  local max_entries, max_bytes = tonumber(meta[5]), tonumber(meta[6])
  if max_entries and rcall('LLEN', KEYS[4]) >= max_entries then return { LOG_AT_CAP, 'max entries ' .. meta[5] } end
  if max_bytes and (tonumber(meta[7]) or 0) >= max_bytes then return { LOG_AT_CAP, 'max bytes ' .. meta[6] } end
  if rcall('EXISTS', KEYS[2]) == 1 then
    if resuming then
      rcall('SUNIONSTORE', KEYS[3], KEYS[3], KEYS[2])
      rcall('DEL', KEYS[2])
    else
      rcall('RENAME', KEYS[2], KEYS[3])
    end
  end
  rcall('HDEL', KEYS[1], 'state', 'stateSince')
end
return { OK, meta[1] or '0', meta[2] or '0', meta[3] or '', rcall('SCARD', KEYS[3]) }
