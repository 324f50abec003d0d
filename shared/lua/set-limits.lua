#!lua
--[[
  Sets or removes a queue's cap (qsync limit, consumer/queue/limits.ts), and
  with --clear-repair brings the queue back to 'ok': the state and the dirty
  set go together, so that a write never sees one without the other. On a
  Redis Cluster it runs once per hash slot's queue, with the dirty set only
  for --clear-repair: a script of two keys waits (TRYAGAIN) while its slot
  moves unless both keys are on the same node, one key never does.

  Input: (the key count first)
    KEYS[1] meta hash
    KEYS[2] dirty set (for --clear-repair)
    ARGV[1] '1': remove every cap first (--clear)
    ARGV[2] maxEntries  \
    ARGV[3] maxBytes     | '': left as it is, '0': removed, else the new value
    ARGV[4] policy       |
    ARGV[5] maxDirty    /
    ARGV[6] '1': forget the state and the dirty keys (--clear-repair)

  Output:
    1
]]
local rcall = redis.call
local caps = { 'maxEntries', 'maxBytes', 'policy', 'maxDirty' }
if ARGV[1] == '1' then rcall('HDEL', KEYS[1], unpack(caps)) end
for i, field in ipairs(caps) do
  local value = ARGV[i + 1]
  if value == '0' then
    rcall('HDEL', KEYS[1], field)
  elseif value ~= '' then
    rcall('HSET', KEYS[1], field, value)
  end
end
if ARGV[6] == '1' and KEYS[2] then
  rcall('HDEL', KEYS[1], 'state', 'stateSince')
  rcall('DEL', KEYS[2])
end
return 1
