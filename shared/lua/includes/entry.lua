--[[
  The log entry format, version 1, packed with cmsgpack:
    { 1, seq, ts (ms), db, { {name, arg, ...}, ... } }
  seq comes from the meta hash, incremented in the same step as the write.
  The meta hash gets an epoch when its sequence starts, so that a master that
  lost its data (and restarted its sequence) is told apart from the old one.
]]
-- Leaves the script in the queue db: call it last.
local function append_entry(meta_key, log_key, db, queue_db, cmds)
  if db ~= queue_db then rcall('SELECT', queue_db) end
  local seq = rcall('HINCRBY', meta_key, 'seq', 1)
  local ts, t = now_ms()
  if seq == 1 then rcall('HSET', meta_key, 'epoch', t[1] .. '.' .. t[2]) end
  rcall('RPUSH', log_key, cmsgpack.pack({ 1, seq, ts, tonumber(db), cmds }))
  return seq
end
