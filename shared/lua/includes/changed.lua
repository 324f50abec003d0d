-- Whether a write's reply says it changed something (the log rule
-- 'changed'): a count above 0, a string or status, a non-empty array.
local function changed(reply)
  local t = type(reply)
  if t == 'number' then return reply > 0 end
  if t == 'string' then return true end
  if t == 'table' then return reply.ok ~= nil or #reply > 0 end
  return false
end
