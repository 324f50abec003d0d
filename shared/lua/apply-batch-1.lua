#!lua
--[[
  Applies a batch of log entries on the replica and moves the watermark in the
  same atomic step, so that every entry is applied exactly once however often
  a batch is sent. Entries at or below the watermark are skipped.

  If the replica refuses a command of a group, the commands before it stay
  applied and the watermark records how many ('part'), so a retry resumes
  after them instead of applying them twice.

  Input:
    KEYS[1] applied hash (seq, epoch, ts, part), in the queue db
    ARGV[1] the master's epoch
    ARGV[2] queue db
    ARGV[3...] entries, as read from the log

  Output:
     {0, watermark, applied count}
    {-1, watermark, seq}               gap: seq follows watermark, entries between are gone
    {-2, replica epoch}                the replica follows another log (the master's sequence started over)
    {-3, position}                     the entry at that position (1-based) is not a qsync entry
    {-4, watermark, seq, index, error} the replica refused command index of entry seq
                                       (index 0: the entry's db could not be selected)
]]
local rcall = redis.call
--- @include "includes/decode"

local epoch = ARGV[1]
local queue_db = ARGV[2]
local cur = rcall('HMGET', KEYS[1], 'seq', 'epoch', 'part')
local watermark = tonumber(cur[1]) or 0
if cur[2] and cur[2] ~= epoch then return { -2, cur[2] } end

local part_seq, part_done = 0, 0
if cur[3] then
  local s, d = string.match(cur[3], '^(%d+):(%d+)$')
  part_seq, part_done = tonumber(s), tonumber(d)
end

local todo = {}
local expect = watermark + 1
for i = 3, #ARGV do
  local e = decode_entry(ARGV[i])
  if not e then return { -3, i - 2 } end
  if e[2] > watermark then
    if e[2] ~= expect then return { -1, watermark, e[2] } end
    todo[#todo + 1] = e
    expect = expect + 1
  end
end

local function save(fields)
  rcall('SELECT', queue_db)
  rcall('HSET', KEYS[1], 'epoch', epoch, unpack(fields))
end

-- Stops at a refused command: what ran before it stays applied (a script
-- does not roll back), so the watermark and 'part' must record exactly that.
-- index 0 means the entry's db could not be selected.
local function refuse(e, index, last, last_ts, err)
  local done = index - 1
  if index == 0 then done = e[2] == part_seq and part_done or 0 end
  local fields = { 'part', e[2] .. ':' .. done }
  if last_ts then
    fields[3], fields[4], fields[5], fields[6] = 'seq', string.format('%.0f', last), 'ts', string.format('%.0f', last_ts)
  end
  save(fields)
  return { -4, last, e[2], index, err }
end

local db = nil
local last, last_ts = watermark, nil
for _, e in ipairs(todo) do
  if e[4] ~= db then
    -- pcall: an error raised here would end the script with the entries
    -- before it applied but the watermark not moved.
    local r = redis.pcall('SELECT', e[4])
    if type(r) == 'table' and r.err then return refuse(e, 0, last, last_ts, r.err) end
    db = e[4]
  end
  local first = 1
  if e[2] == part_seq then first = part_done + 1 end
  local cmds = e[5]
  for j = first, #cmds do
    local r = redis.pcall(unpack(cmds[j]))
    if type(r) == 'table' and r.err then return refuse(e, j, last, last_ts, r.err) end
  end
  last, last_ts = e[2], e[3]
end

if last_ts then
  save({ 'seq', string.format('%.0f', last), 'ts', string.format('%.0f', last_ts) })
  rcall('HDEL', KEYS[1], 'part')
end
return { 0, last, #todo }
