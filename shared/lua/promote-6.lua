#!lua
--[[
  Makes a replica of a queue the queue's master, in one step (qsync failover,
  qsync promote; consumer/failover/). The server keeps its data; the queue
  gets a log of its own on it, empty, with a new epoch, and its meta hash
  records where it was promoted from: the old master's epoch and the last
  entry of it this server applied. The applied hash is marked 'promoted'
  (the new epoch), so that no consumer of the old master applies anything
  to it any more (apply-batch-1.lua refuses), and keeps its watermark: the
  old master's entries after it are the ones this server never got.

  What the server held as a master of the queue before (a log, a dirty set,
  a consumer's status, the positions of its replicas, a fence) belongs to a
  role it no longer has and goes; the queue's cap settings stay.

  Input:
    KEYS[1] meta hash, KEYS[2] log list, KEYS[3] dirty set, KEYS[4] status
            hash, KEYS[5] role history list, KEYS[6] applied hash; all in
            the queue db
    ARGV[1] the epoch of the old master's log this server must follow ('':
            whichever it follows)
    ARGV[2] the old master, as people name it ('' : not known)
    ARGV[3] how: 'failover' or 'promote'
    ARGV[4...] the role history to start from (JSON records, oldest first),
            replacing this server's; none given: this server's own is kept

  Output (codes: shared/reply-codes.ts):
    {OK, last seq applied, old epoch, new epoch, at (ms), keys pending a copy}
    {NOT_A_REPLICA}          the server holds no watermark of the queue
    {PROMOTED, epoch}        the server was promoted already
    {RESYNCING}              a resync or repair of the server did not finish: its data is incomplete
    {OTHER_LOG, epoch}       the server follows another log than ARGV[1]
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/now"

local cur = rcall('HMGET', KEYS[6], 'seq', 'epoch', 'resyncing', 'promoted', 'heldPending')
if not cur[1] then return { NOT_A_REPLICA } end
if cur[4] then return { PROMOTED, cur[4] } end
if cur[3] then return { RESYNCING } end
if ARGV[1] ~= '' and cur[2] ~= ARGV[1] then return { OTHER_LOG, cur[2] or '' } end

local at, t = now_ms()
local epoch = t[1] .. '.' .. t[2]
local old_epoch = cur[2] or ''
local stamp = string.format('%.0f', at)

local settings = { 'maxEntries', 'maxBytes', 'policy', 'maxDirty' }
local kept = rcall('HMGET', KEYS[1], unpack(settings))
-- With them goes where the replicas of its old role were in its old log:
-- the hash beside the meta hash named 'replicas' (consumer/replicas/).
rcall('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], string.sub(KEYS[1], 1, -5) .. 'replicas')
local meta = {
  'seq', '0', 'bytes', '0', 'epoch', epoch,
  'promotedFrom', ARGV[2], 'promotedFromEpoch', old_epoch, 'promotedAtSeq', cur[1], 'promotedAt', stamp,
}
for i, name in ipairs(settings) do
  if kept[i] then
    meta[#meta + 1] = name
    meta[#meta + 1] = kept[i]
  end
end
rcall('HSET', KEYS[1], unpack(meta))

if #ARGV >= 4 then
  rcall('DEL', KEYS[5])
  rcall('RPUSH', KEYS[5], unpack(ARGV, 4))
end
rcall('RPUSH', KEYS[5], cjson.encode({
  event = 'promoted', how = ARGV[3], from = ARGV[2], fromEpoch = old_epoch, atSeq = tonumber(cur[1]), at = at, epoch = epoch,
}))

rcall('HSET', KEYS[6], 'promoted', epoch, 'promotedAt', stamp)
return { OK, cur[1], old_epoch, epoch, stamp, tonumber(cur[5]) or 0 }
