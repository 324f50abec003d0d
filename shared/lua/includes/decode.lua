-- Whether a decoded value is a log entry (see includes/entry.lua): the
-- fields have their types, every command is a table led by its name, and
-- the views, when there are (entries from older producers have none), are
-- one per command (a table, or 0: see includes/view.lua).
-- (Locals: a script's globals are a table lookup each time.)
local type = type
local function is_entry(e)
  if type(e) ~= 'table' or e[1] ~= 1 or type(e[2]) ~= 'number'
    or type(e[3]) ~= 'number' or type(e[4]) ~= 'number' or type(e[5]) ~= 'table'
    or type(e[6]) ~= 'number' or (e[7] ~= nil and type(e[7]) ~= 'table') then
    return false
  end
  local cmds, views = e[5], e[7]
  for i = 1, #cmds do
    local cmd = cmds[i]
    if type(cmd) ~= 'table' or type(cmd[1]) ~= 'string' then return false end
    if views and type(views[i]) ~= 'table' and views[i] ~= 0 then return false end
  end
  return true
end

-- Decodes a log entry; nil when it is not one.
local function decode_entry(raw)
  local ok, e = pcall(cmsgpack.unpack, raw)
  if ok and is_entry(e) then return e end
  return nil
end
