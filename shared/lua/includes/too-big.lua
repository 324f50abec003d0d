-- Whether a key of type t is too big to send whole in one reply: a string
-- longer than max_bytes, a collection with more than max_members members or
-- more than max_bytes bytes (MEMORY USAGE). Streams and module types have no
-- chunked copy: always sent whole.
local MEMBER_COUNT = { list = 'LLEN', set = 'SCARD', zset = 'ZCARD', hash = 'HLEN' }
local function too_big(key, t, max_members, max_bytes)
  if t == 'string' then return rcall('STRLEN', key) > max_bytes end
  if not MEMBER_COUNT[t] then return false end
  return rcall(MEMBER_COUNT[t], key) > max_members or (rcall('MEMORY', 'USAGE', key) or 0) > max_bytes
end
