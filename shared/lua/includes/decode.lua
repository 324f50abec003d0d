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

-- Reading an entry from its bytes, for the shape most entries take: one
-- command, and a view of its first key only (or none). cmsgpack builds
-- three tables for each entry; this fills one table per argument count,
-- made once (a table grown an element at a time is rebuilt as it grows).
-- Positions are 1-based; nothing is read past last, so bytes that are not
-- an entry only make it answer nil.
local byte, sub = string.byte, string.sub
local quick_cmds = {}

-- The time in ms at p (a msgpack uint 64, 0xcf, under 2^53: cmsgpack would
-- round a larger one); nil for anything else, or one that ends past last.
local function quick_time(s, p, last)
  if p + 8 > last then return nil end
  local t, t1, t2, t3, t4, t5, t6, t7, t8 = byte(s, p, p + 8)
  if t ~= 0xcf or t1 ~= 0 or t2 >= 0x20 then return nil end
  return ((((((t2 * 256 + t3) * 256 + t4) * 256 + t5) * 256 + t6) * 256 + t7) * 256) + t8
end

-- The entry whose bytes are s[p..last], when it has one command of fewer
-- than 16 arguments and its view is FIRST_KEY_ANY or one key at position 2
-- (includes/view.lua), and its numbers are as cmsgpack writes them for a
-- sequence, a time in ms and a db: seq, ts, prev ts, db, the command, and
-- the master's view of its first key (nil: ANY, nothing to check). nil for
-- any other entry, which the full decoding (cmsgpack, is_entry) then takes.
-- The command's table is the next one's: use it before reading another.
local function quick_entry(s, p, last)
  if last - p < 20 then return nil end
  local h, version, seq = byte(s, p, p + 2)
  if h ~= 0x97 or version ~= 1 then return nil end
  p = p + 3
  if seq >= 0x80 then
    if seq == 0xcd then
      local a, b = byte(s, p, p + 1)
      seq, p = a * 256 + b, p + 2
    elseif seq == 0xce then
      local a, b, c, d = byte(s, p, p + 3)
      seq, p = ((a * 256 + b) * 256 + c) * 256 + d, p + 4
    elseif seq == 0xcc then
      seq, p = byte(s, p), p + 1
    else
      return nil
    end
  end
  -- ts, db, one command of n arguments
  local ts = quick_time(s, p, last - 3)
  if not ts then return nil end
  local db, one, n = byte(s, p + 9, p + 11)
  if db >= 0x80 or one ~= 0x91 or n < 0x91 or n > 0x9f then return nil end
  p = p + 12
  n = n - 0x90
  local cmd = quick_cmds[n]
  if not cmd then
    cmd = {}
    quick_cmds[n] = cmd
  end
  for a = 1, n do
    if p > last then return nil end
    local len = byte(s, p)
    if len >= 0xa0 and len <= 0xbf then
      len, p = len - 0xa0, p + 1
    elseif len == 0xd9 and p + 1 <= last then
      len, p = byte(s, p + 1), p + 2
    elseif len == 0xda and p + 2 <= last then
      local x, y = byte(s, p + 1, p + 2)
      len, p = x * 256 + y, p + 3
    else
      return nil
    end
    if p + len > last then return nil end
    cmd[a] = sub(s, p, p + len - 1)
    p = p + len
  end
  -- prev ts (0 for the first entry of a log), then the views
  local prev = 0
  if byte(s, p) == 0 then
    p = p + 1
  else
    prev = quick_time(s, p, last)
    if not prev then return nil end
    p = p + 9
  end
  if p + 1 > last then return nil end
  local views, view = byte(s, p, p + 1)
  local want
  if views ~= 0x91 then return nil end
  if view == 0 then
    want, p = nil, p + 2
  elseif view == 0x92 and p + 3 <= last and byte(s, p + 2) == 2 and n >= 2 then
    -- -3 (ANY), -2 or -1, else a time in ms
    want = byte(s, p + 3)
    if want == 0xfd then
      want, p = nil, p + 4
    elseif want == 0xfe or want == 0xff then
      want, p = want - 256, p + 4
    else
      want = quick_time(s, p + 3, last)
      if not want then return nil end
      p = p + 12
    end
  else
    return nil
  end
  if p ~= last + 1 then return nil end
  return seq, ts, prev, db, cmd, want
end
