#!lua flags=no-writes
--[[
  Reads the next entries of the log for the consumer, up to a count and a
  byte budget (always at least one entry), together with the master's epoch
  and sequence, in one round trip. Reads in chunks so that a log of huge
  entries is never copied whole into the script.

  Input:
    KEYS[1] log list
    KEYS[2] meta hash
    ARGV[1] offset of the first entry to read
    ARGV[2] most entries
    ARGV[3] most bytes

  Output:
    {epoch or '', seq or '', entry, entry, ...}
]]
local rcall = redis.call
local meta = rcall('HMGET', KEYS[2], 'epoch', 'seq')
local out = { meta[1] or '', meta[2] or '' }
local offset = tonumber(ARGV[1])
local most = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local bytes = 0
while #out - 2 < most do
  local want = math.min(64, most - (#out - 2))
  local chunk = rcall('LRANGE', KEYS[1], offset, offset + want - 1)
  for _, e in ipairs(chunk) do
    if #out > 2 and bytes + #e > budget then return out end
    out[#out + 1] = e
    bytes = bytes + #e
  end
  if #chunk < want then break end
  offset = offset + #chunk
end
return out
