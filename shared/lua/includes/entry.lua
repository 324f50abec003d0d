--[[
  The log entry format, version 1, packed with cmsgpack:
    { 1, seq, ts (ms), db, { {name, arg, ...}, ... }, prev ts (ms), views }
  views (from this producer on; entries without it apply as before): for
  each command, the master's view of its keys just before it ran, a flat
  list { position, expiry, position, expiry... } (includes/view.lua).
  seq comes from the meta hash, incremented in the same step as the write.
  The meta hash gets an epoch when its sequence starts (unless a promotion
  gave it one already), so that a master that lost all its data (and
  restarted its sequence) is told apart from the old one. Each entry also
  carries the time of the entry before it: a master that lost only its last
  writes and then reused their sequence numbers writes a history whose links
  do not match what the replica applied. The meta hash
  also counts the bytes of the entries queued ('bytes'), which the consumer's
  trim takes off again (includes/head.lua).
]]
-- Appends one entry for each list of commands in groups (with its list of
-- views in views), with consecutive sequence numbers, in one HSET and one RPUSH. prev_seq, prev_ts and bytes
-- are the meta hash's seq, ts and bytes, read by the caller before it wrote
-- anything. Leaves the script in the queue db: call it last.
local function append_entries(meta_key, log_key, db, queue_db, groups, views, prev_seq, prev_ts, bytes)
  if db ~= queue_db then rcall('SELECT', queue_db) end
  local seq = tonumber(prev_seq) or 0
  local first = seq + 1
  local ts, t = now_ms()
  local link = tonumber(prev_ts) or 0
  local queued = tonumber(bytes) or 0
  local entries = {}
  for g = 1, #groups do
    seq = seq + 1
    local entry = cmsgpack.pack({ 1, seq, ts, tonumber(db), groups[g], link, views[g] })
    link = ts
    queued = queued + #entry
    entries[g] = entry
  end
  -- A number is passed to HSET as %.17g: exact for any count of bytes a server holds.
  local stamp = string.format('%.0f', ts)
  rcall('HSET', meta_key, 'seq', string.format('%.0f', seq), 'ts', stamp, 'bytes', queued)
  -- A promoted master's log starts with the epoch its promotion gave it (consumer/failover/).
  if first == 1 then rcall('HSETNX', meta_key, 'epoch', t[1] .. '.' .. t[2]) end
  rcall('RPUSH', log_key, unpack(entries))
end
