#!lua
--[[
  A consumer of a cluster queue leaves: its shard leases are free at once and
  it no longer counts among the live consumers.

  Input:
    KEYS[1] consumers (sorted set: consumer id -> heartbeat expiry, ms)
    KEYS[2] shards (hash: source master node id -> "<consumer id> <expiry ms>")
    ARGV[1] consumer id

  Output:
    the number of shard leases released
]]
local rcall = redis.call
--- @include "includes/shard-lease"
rcall('ZREM', KEYS[1], ARGV[1])
local released = 0
for node, lease in pairs(read_shard_leases(KEYS[2])) do
  if lease.holder == ARGV[1] then
    rcall('HDEL', KEYS[2], node)
    released = released + 1
  end
end
return released
