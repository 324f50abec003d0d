#!lua flags=allow-cross-slot-keys,no-writes
--[[
  Which of a cluster node's slot logs hold entries: the cluster consumer's
  sweep (consumer/cluster/shard-worker.ts), one call per source master
  instead of one LLEN per slot. The logs come as arguments, not keys: Redis
  refuses declared keys of several slots (CROSSSLOT) even to a script that may
  read them. A node that does not serve one of the slots now (moved, or
  moving) fails the script at that log ('a non local key'), and the consumer
  sweeps slot by slot then. Reads only.

  Input:
    ARGV[1..n] the logs of the slots the node owns (any slots, all on this node)

  Output:
    the positions (1-based) in ARGV of the logs that are not empty, ascending
]]
local rcall = redis.call
local busy = {}
for i = 1, #ARGV do
  if rcall('LLEN', ARGV[i]) > 0 then busy[#busy + 1] = i end
end
return busy
