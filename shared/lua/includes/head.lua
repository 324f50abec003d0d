-- Whether this consumer may remove count entries from the head of the log:
-- it holds the lease, and the last of them is still the entry it applied
-- (sha1 as read). 0 yes, -1 the lease is not held by this token, -2 the head
-- of the log is not what was applied.
local function check_head(log_key, lease_key, token, count, sha)
  if rcall('GET', lease_key) ~= token then return -1 end
  local last = rcall('LINDEX', log_key, count - 1)
  if not last or redis.sha1hex(last) ~= sha then return -2 end
  return 0
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

-- Removes the first count entries, takes their bytes off the count and
-- records the replica's watermark in the status hash: the end of every
-- confirmation (trim-4, park-5), once check_head passed.
local function remove_head(log_key, meta_key, status_key, count, removed, watermark, watermark_ts)
  rcall('LTRIM', log_key, count, -1)
  release_bytes(meta_key, log_key, removed)
  rcall('HSET', status_key, 'watermark', watermark, 'watermarkTs', watermark_ts)
end
