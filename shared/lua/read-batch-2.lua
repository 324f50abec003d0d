#!lua flags=no-writes
--[[
  Reads the next batch of the log for the consumer, with the master's epoch
  and sequence, in one round trip.

  The batch size follows the backlog: the entries not yet read are shared
  out over a few batches (never fewer than 64 a batch, nor more than the
  most asked for), so that a short queue leaves in small
  batches at once and a long one fills the link with large ones. A byte
  budget bounds the batch too (a single larger entry still goes alone), and
  the log is read in chunks sized by the average entry (the meta hash's
  bytes over the log's length), so that no more than about one entry past
  the budget is copied into the script: a log of 20 MB entries is read one
  at a time, not 64 (1.3 GB) to return one.

  Input:
    KEYS[1] log list
    KEYS[2] meta hash
    ARGV[1] offset of the first entry to read
    ARGV[2] most entries
    ARGV[3] most bytes
    ARGV[4] how many batches to share the backlog out over
    ARGV[5] the replica's name: ARGV[1] then counts from the first entry
            it has not confirmed (includes/replicas.lua), and the reply
            says how many entries before those the log still holds for
            other replicas; without it, ARGV[1] counts from the head
    ARGV[6] 'joined' (with ARGV[5]): the entries come end to end in one
            string, after their byte lengths as a msgpack array, the two
            arguments the apply script takes (apply-batch-1.lua): the
            consumer forwards them without handling each entry

  Output:
    {epoch or '', seq or '', entries left after this batch[, entries before], entry, entry, ...}
    {epoch or '', seq or '', entries left, entries before, lengths, entries}  ('joined')
    entries left is -1, with nothing after it, for a replica detached from the log
]]
local rcall = redis.call
--- @include "includes/replicas"
local meta = rcall('HMGET', KEYS[2], 'epoch', 'seq', 'bytes')
local offset = tonumber(ARGV[1])
local out = { meta[1] or '', meta[2] or '', 0 }
if ARGV[5] then
  local first = replica_start(KEYS[2], ARGV[5])
  if not first then return { meta[1] or '', meta[2] or '', -1 } end
  offset = offset + first
  out[4] = first
end
local length = rcall('LLEN', KEYS[1])
local backlog = length - offset
local average = length > 0 and (tonumber(meta[3]) or 0) / length or 0
local most = math.min(tonumber(ARGV[2]), math.max(64, math.ceil(backlog / tonumber(ARGV[4]))))
local budget = tonumber(ARGV[3])
local head = #out
local bytes = 0
local full = false
while not full and #out - head < most and bytes < budget do
  local want = math.min(64, most - (#out - head))
  if average > 0 then want = math.max(1, math.min(want, math.floor((budget - bytes) / average) + 1)) end
  local chunk = rcall('LRANGE', KEYS[1], offset, offset + want - 1)
  for _, e in ipairs(chunk) do
    if #out > head and bytes + #e > budget then
      full = true
      break
    end
    out[#out + 1] = e
    bytes = bytes + #e
  end
  if #chunk < want then break end
  offset = offset + #chunk
end
out[3] = math.max(0, backlog - (#out - head))
if ARGV[6] ~= 'joined' then return out end
local lengths = {}
for i = head + 1, #out do lengths[i - head] = #out[i] end
return { out[1], out[2], out[3], out[4], cmsgpack.pack(lengths), table.concat(out, '', head + 1) }
