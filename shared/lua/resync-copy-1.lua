#!lua
--[[
  Reads keys of the master (a big key for a resync's copy, consumer/copy/copier.ts;
  the keys a consumer holds back, consumer/drain/held-keys.ts),
  together with the log sequence they reflect, in one atomic step: the copy
  of every key returned is exactly that key after entry 'seq'.
  A key too big to send whole is returned without its value. Given a
  snapshot key, the one key asked for is copied to it instead (COPY: O(N)
  time and the key's size in extra memory on the master until the resync
  deletes it), so that it can be read in chunks while writers change the
  original.
  Input:
    KEYS[1] meta hash (seq, epoch), in the queue db
    ARGV[1] queue db
    ARGV[2] db of the keys
    ARGV[3] most members of a key sent whole
    ARGV[4] most bytes of a key sent whole
    ARGV[5] snapshot key in the queue db, or '' for none
    ARGV[6...] keys (one only with a snapshot key)
  Output:
    {seq, epoch, key, type, dump, abs expiry (ms, -1 none), ...}
    type 'none': the key does not exist. dump '': too big to send whole, or
    copied to the snapshot key.
]]
local rcall = redis.call
--- @include "includes/too-big"
local max_members, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local snapshot = ARGV[5]
rcall('SELECT', ARGV[2])
local out = { '', '' }
for i = 6, #ARGV do
  local key = ARGV[i]
  local t = rcall('TYPE', key).ok
  local dump, at = '', -1
  if t ~= 'none' then
    at = rcall('PEXPIRETIME', key)
    if snapshot ~= '' then
      rcall('COPY', key, snapshot, 'DB', ARGV[1], 'REPLACE')
    elseif not too_big(key, t, max_members, max_bytes) then
      dump = rcall('DUMP', key)
    end
  end
  out[#out + 1] = key
  out[#out + 1] = t
  out[#out + 1] = dump
  out[#out + 1] = at
end
rcall('SELECT', ARGV[1])
local meta = rcall('HMGET', KEYS[1], 'seq', 'epoch')
out[1] = meta[1] or '0'
out[2] = meta[2] or ''
return out
