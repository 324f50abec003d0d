--[[
  The log entry format, version 1, packed with cmsgpack:
    { 1, seq, ts (ms), db, { {name, arg, ...}, ... }, prev ts (ms) }
  seq comes from the meta hash, incremented in the same step as the write.
  The meta hash gets an epoch when its sequence starts, so that a master that
  lost all its data (and restarted its sequence) is told apart from the old
  one. Each entry also carries the time of the entry before it: a master that
  lost only its last writes and then reused their sequence numbers writes a
  history whose links do not match what the replica applied.
]]
-- Leaves the script in the queue db: call it last.
local function append_entry(meta_key, log_key, db, queue_db, cmds)
  if db ~= queue_db then rcall('SELECT', queue_db) end
  local meta = rcall('HMGET', meta_key, 'seq', 'ts')
  local seq = (tonumber(meta[1]) or 0) + 1
  local ts, t = now_ms()
  local stamp = string.format('%.0f', ts)
  if seq == 1 then
    rcall('HSET', meta_key, 'seq', '1', 'ts', stamp, 'epoch', t[1] .. '.' .. t[2])
  else
    rcall('HSET', meta_key, 'seq', string.format('%.0f', seq), 'ts', stamp)
  end
  rcall('RPUSH', log_key, cmsgpack.pack({ 1, seq, ts, tonumber(db), cmds, tonumber(meta[2]) or 0 }))
  return seq
end
