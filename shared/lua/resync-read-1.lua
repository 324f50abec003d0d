#!lua
--[[
  Reads a batch of keys of the master for a resync's copy
  (consumer/copy/copier.ts) in one atomic step, with the log sequence they
  reflect: the copy of every key is that key after entry 'seq'. The copies
  come packed as the replica's resync-restore-0.lua ('packed') takes them,
  so that they travel through the resync as one value, not one per key.
  Input (those of resync-copy-1.lua, with no snapshot key):
    KEYS[1] meta hash (seq, epoch) in ARGV[1], the queue db
    ARGV[2] db of the keys; ARGV[3], ARGV[4] most members, most bytes of a
    key sent whole; ARGV[5...] the keys
  Output:
    {seq, epoch, copies, big key...}
    copies: MessagePack array of key, abs expiry (ms, -1 none), DUMP ('' when
    the key does not exist), for every key but the big ones
    big keys: too big to send whole; the resync copies them from a snapshot
    (resync-copy-1.lua)
]]
local rcall = redis.call
--- @include "includes/too-big"
local max_members, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
rcall('SELECT', ARGV[2])
local copies, big = {}, {}
for i = 5, #ARGV do
  local key = ARGV[i]
  local t = rcall('TYPE', key).ok
  if t == 'none' then
    copies[#copies + 1] = key
    copies[#copies + 1] = -1
    copies[#copies + 1] = ''
  elseif too_big(key, t, max_members, max_bytes) then
    big[#big + 1] = key
  else
    copies[#copies + 1] = key
    copies[#copies + 1] = rcall('PEXPIRETIME', key)
    copies[#copies + 1] = rcall('DUMP', key)
  end
end
rcall('SELECT', ARGV[1])
local meta = rcall('HMGET', KEYS[1], 'seq', 'epoch')
local out = { meta[1] or '0', meta[2] or '', cmsgpack.pack(copies) }
for i = 1, #big do
  out[#out + 1] = big[i]
end
return out
