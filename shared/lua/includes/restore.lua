-- Writes a key's copy from the master on the replica: key, its absolute
-- expiry as read there (ms, -1 none) and its DUMP, '' when the master had no
-- such key (deleted here). An expiry already past by this clock leaves no
-- key (RESTORE ... ABSTTL).
local function restore_copy(key, at, dump)
  if dump == '' then
    rcall('DEL', key)
  else
    rcall('RESTORE', key, tonumber(at) > 0 and at or 0, dump, 'REPLACE', 'ABSTTL')
  end
end
