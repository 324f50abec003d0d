#!lua
--[[
  Reads a batch of keys of the master for a resync's copy
  (consumer/copy/copier.ts) in one atomic step, with the log sequence they
  reflect: the copy of every key is that key after entry 'seq'. The copies
  come packed as the replica's resync-restore.lua ('packed') takes them,
  so that they travel through the resync as one value, not one per key.
  Input (those of resync-copy-1.lua, with no snapshot key):
    KEYS[1] meta hash (seq, epoch) in ARGV[1], the queue db
    ARGV[2] db of the keys; ARGV[3], ARGV[4] most members, most bytes of a
    key sent whole; ARGV[5...] the keys
  Output:
    {seq, epoch, n, copies 1..n, big key...}
    copies: MessagePack arrays of key, abs expiry (ms, -1 none), DUMP ('' when
    the key does not exist), for every key but the big ones; a new array
    starts past PACK_BYTES, so that each stays far below the replica's
    proto-max-bulk-len (512 MB) as one argument
    big keys: too big to send whole; the resync copies them from a snapshot
    (resync-copy-1.lua)
]]
local rcall = redis.call
--- @include "includes/too-big"
local PACK_BYTES = 32 * 1024 * 1024
local max_members, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local packs, copies, bytes, big = {}, {}, 0, {}
local function add(key, at, dump)
  copies[#copies + 1] = key
  copies[#copies + 1] = at
  copies[#copies + 1] = dump
  bytes = bytes + #key + #dump
  if bytes >= PACK_BYTES then
    packs[#packs + 1] = cmsgpack.pack(copies)
    copies, bytes = {}, 0
  end
end
rcall('SELECT', ARGV[2])
for i = 5, #ARGV do
  local key = ARGV[i]
  local t = rcall('TYPE', key).ok
  if t == 'none' then
    add(key, -1, '')
  elseif too_big(key, t, max_members, max_bytes) then
    big[#big + 1] = key
  else
    add(key, rcall('PEXPIRETIME', key), rcall('DUMP', key))
  end
end
if #copies > 0 then packs[#packs + 1] = cmsgpack.pack(copies) end
rcall('SELECT', ARGV[1])
local meta = rcall('HMGET', KEYS[1], 'seq', 'epoch')
local out = { meta[1] or '0', meta[2] or '', #packs }
for i = 1, #packs do
  out[#out + 1] = packs[i]
end
for i = 1, #big do
  out[#out + 1] = big[i]
end
return out
