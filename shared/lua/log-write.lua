#!lua
--[[
  Runs writes on the master and appends their deterministic form to the log,
  in one atomic step. A write that fails or changes nothing logs nothing.

  Input:
    KEYS[1] meta hash (seq, epoch), in the queue db
    KEYS[2] log list, in the queue db
    KEYS[3...] the keys the writes touch (declared only)
    ARGV[1] db the writes run in
    ARGV[2] queue db
    ARGV[3] '1' for one command (its reply is returned as it is), '0' for a
            group (an array of replies is returned, errors in place)
    ARGV[4...] the commands, each as: argument count n, log rule (from the
            command table in shared/commands.ts), name, n - 1 arguments.
            An empty rule marks a read inside a group (the producer refuses
            every unsupported write before sending): it runs in place and
            logs nothing.

  Output:
    the reply of the write, or the array of replies of the group
]]
local rcall = redis.call
--- @include "includes/log-rules"
--- @include "includes/now"
--- @include "includes/entry"

-- Run the writes in the db the entry names, whatever db the connection is in,
-- and refuse before writing anything when that db does not exist.
local selected = redis.pcall('SELECT', ARGV[1])
if type(selected) == 'table' and selected.err then return selected end

local cmds, rules = {}, {}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {}
  for j = 1, n do cmd[j] = ARGV[i + 1 + j] end
  cmds[#cmds + 1] = cmd
  rules[#cmds] = ARGV[i + 1]
  i = i + n + 2
end

local replies = {}
local out = {}
local PRE, RULES
for k, cmd in ipairs(cmds) do
  local rule = rules[k]
  if rule == 'always' or rule == 'changed' or rule == '' then
    local reply = redis.pcall(unpack(cmd))
    if rule ~= '' and not (type(reply) == 'table' and reply.err) and (rule == 'always' or changed(reply)) then
      push(out, cmd)
    end
    replies[k] = reply
  else
    if not RULES then PRE, RULES = load_rules() end
    if not RULES[rule] then
      replies[k] = { err = 'ERR qsync: unknown log rule ' .. rule .. '; nothing was written' }
    else
      local pre = PRE[rule] and PRE[rule](cmd)
      local reply = redis.pcall(unpack(cmd))
      if not (type(reply) == 'table' and reply.err) then RULES[rule](cmd, reply, out, pre) end
      replies[k] = reply
    end
  end
end

if #out > 0 then
  append_entry(KEYS[1], KEYS[2], ARGV[1], ARGV[2], out)
end

if ARGV[3] == '1' then return replies[1] end
return replies
