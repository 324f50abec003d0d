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
