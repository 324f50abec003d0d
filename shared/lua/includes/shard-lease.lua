-- A cluster queue's shard leases: node id -> {holder, expiry}. A value that is
-- not "<consumer id> <expiry ms>" is an error naming it: nobody's lease is
-- overwritten on a guess.
local function read_shard_leases(key)
  local flat = rcall('HGETALL', key)
  local leases = {}
  for i = 1, #flat, 2 do
    local holder, expiry = string.match(flat[i + 1], '^(.+) (%d+)$')
    if not holder then
      error({ err = 'ERR qsync: shard lease ' .. flat[i] .. ' in ' .. key .. ' is "' .. flat[i + 1] .. '", not "<consumer id> <expiry ms>"' }, 0)
    end
    leases[flat[i]] = { holder = holder, expiry = tonumber(expiry) }
  end
  return leases
end
