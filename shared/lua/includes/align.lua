-- Brings one key on the replica to the master's view of it, before a command
-- runs: want is what PEXPIRETIME said on the master (-2 absent, -1 no
-- expiry, else the absolute time), call runs a command (redis.call or the
-- caller's wrapper), clock() is the replica's time in ms. Returns 'aligned'
-- when the key was deleted or given the master's expiry, 'lost' when the
-- master had the key and the replica cannot hold it as the master did (gone
-- here, or its time already past by this clock), nil when it matched.
local function align_key(call, key, want, clock)
  local at = call('PEXPIRETIME', key)
  if want == -2 then
    if at == -2 then return nil end
    call('DEL', key)
    return 'aligned'
  end
  if at == -2 then return 'lost' end
  if at == want then return nil end
  if want == -1 then
    call('PERSIST', key)
    return 'aligned'
  end
  if want > clock() then
    call('PEXPIREAT', key, string.format('%.0f', want))
    return 'aligned'
  end
  return 'lost'
end
