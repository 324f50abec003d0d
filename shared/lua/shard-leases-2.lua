#!lua
--[[
  Heartbeats a consumer of a cluster queue and gives it its fair share of the
  shard leases: with C live consumers and S shards, floor(S / C), or one more
  for the S mod C consumers that hold the most now (ties by id), so that no
  consumer holds more than ceil(S / C) and none stays idle while another
  holds more than its share. A free or expired lease is taken, a consumer
  over its share gives up the excess (keeping the shards it holds first in
  the list), and the leases of shards that are no longer masters are dropped
  once they expire.

  Input:
    KEYS[1] consumers (sorted set: consumer id -> heartbeat expiry, ms)
    KEYS[2] shards (hash: source master node id -> "<consumer id> <expiry ms>")
    ARGV[1] consumer id
    ARGV[2] lease time (ms)
    ARGV[3] how long an expired consumer stays in the registry (ms)
    ARGV[4...] the source's master node ids now

  Output:
    {expiry (ms, server time), live consumers, this consumer's share, held node ids...}
    an error naming the field when a lease is not "<consumer id> <expiry ms>"
]]
local rcall = redis.call
--- @include "includes/now"
--- @include "includes/shard-lease"
local me = ARGV[1]
local now = now_ms()
local expiry = now + tonumber(ARGV[2])
rcall('ZADD', KEYS[1], string.format('%.0f', expiry), me)
rcall('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now - tonumber(ARGV[3])))
local consumers = rcall('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f', now), '+inf')

local leases = read_shard_leases(KEYS[2])
local wanted, holding = {}, {}
for _, c in ipairs(consumers) do holding[c] = 0 end
for i = 4, #ARGV do
  local lease = leases[ARGV[i]]
  wanted[ARGV[i]] = true
  if lease and holding[lease.holder] and (lease.expiry > now or lease.holder == me) then
    holding[lease.holder] = holding[lease.holder] + 1
  end
end
table.sort(consumers, function(a, b)
  if holding[a] ~= holding[b] then return holding[a] > holding[b] end
  return a < b
end)
local shards, live = #ARGV - 3, #consumers
local share = math.floor(shards / live)
for rank, c in ipairs(consumers) do
  if c == me and rank <= shards % live then share = share + 1 end
end

for node, lease in pairs(leases) do
  if not wanted[node] and (lease.holder == me or lease.expiry <= now) then
    rcall('HDEL', KEYS[2], node)
  end
end

local held, free = {}, {}
for i = 4, #ARGV do
  local node = ARGV[i]
  local lease = leases[node]
  if lease and lease.holder == me then
    if #held < share then
      held[#held + 1] = node
    else
      rcall('HDEL', KEYS[2], node)
    end
  elseif not lease or lease.expiry <= now then
    free[#free + 1] = node
  end
end
for _, node in ipairs(free) do
  if #held >= share then break end
  held[#held + 1] = node
end

local value = me .. ' ' .. string.format('%.0f', expiry)
local reply = { expiry, live, share }
for _, node in ipairs(held) do
  rcall('HSET', KEYS[2], node, value)
  reply[#reply + 1] = node
end
return reply
