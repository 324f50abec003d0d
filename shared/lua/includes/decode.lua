-- Decodes a log entry (see includes/entry.lua); nil when it is not one.
local function decode_entry(raw)
  local ok, e = pcall(cmsgpack.unpack, raw)
  if not ok or type(e) ~= 'table' or e[1] ~= 1 or type(e[2]) ~= 'number'
    or type(e[3]) ~= 'number' or type(e[4]) ~= 'number' or type(e[5]) ~= 'table'
    or type(e[6]) ~= 'number' then
    return nil
  end
  for _, cmd in ipairs(e[5]) do
    if type(cmd) ~= 'table' or type(cmd[1]) ~= 'string' then return nil end
  end
  return e
end
