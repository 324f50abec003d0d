-- An entry of the log as the consumer names it to the master (consumer/drain/
-- confirm.ts, entryId): its length in bytes, ':', then its first bytes. For a
-- qsync entry those hold the array header, the format version, its sequence
-- number and its time, which no other entry of the log shares; the length
-- tells apart bytes that are not an entry. Checking it costs the same whatever
-- the entry's size (hashing a 20 MB entry held the master for a tenth of a
-- second and more).
local function is_entry(raw, id)
  if not raw then return false end
  local colon = string.find(id, ':', 1, true)
  if not colon or tonumber(string.sub(id, 1, colon - 1)) ~= #raw then return false end
  local first = string.sub(id, colon + 1)
  return #first > 0 and string.sub(raw, 1, #first) == first
end

-- Whether this consumer may confirm count entries from offset first of the
-- log: it holds the lease, and the last of them is still the entry it
-- applied (id as read, above). OK yes, LEASE_LOST the lease is not held by
-- this token, HEAD_CHANGED the log is not what was applied.
local function check_head(log_key, lease_key, token, first, count, id)
  if rcall('GET', lease_key) ~= token then return LEASE_LOST end
  if not is_entry(rcall('LINDEX', log_key, first + count - 1), id) then return HEAD_CHANGED end
  return OK
end

-- Takes the bytes of entries just removed from the log off the meta hash's
-- count of queued bytes (includes/entry.lua). An empty log sets it to 0, so
-- that a count that went astray (bytes in the log that no producer counted,
-- a log deleted by hand) is put right by the next full drain. A meta hash
-- without the count is left as it is.
local function release_bytes(meta_key, log_key, removed)
  local bytes = tonumber(rcall('HMGET', meta_key, 'bytes')[1])
  if not bytes then return end
  if rcall('LLEN', log_key) == 0 then
    bytes = 0
  else
    bytes = math.max(0, bytes - tonumber(removed))
  end
  rcall('HSET', meta_key, 'bytes', string.format('%.0f', bytes))
end
