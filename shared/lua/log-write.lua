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
    ARGV[4...] the commands, each as: argument count n, name, n - 1 arguments.
            A command that is not in the command table is a read inside a
            group (the producer refuses every other write before sending):
            it runs in place and logs nothing.

  Output:
    the reply of the write, or the array of replies of the group
]]
local rcall = redis.call
--- @include "generated/commands"
--- @include "includes/log-rules"
--- @include "includes/now"
--- @include "includes/entry"

local cmds = {}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {}
  for j = 1, n do cmd[j] = ARGV[i + j] end
  cmds[#cmds + 1] = cmd
  i = i + n + 1
end

local replies = {}
local out = {}
for k, cmd in ipairs(cmds) do
  local spec = COMMANDS[cmd[1]]
  local pre = spec and PRE[spec.log] and PRE[spec.log](cmd)
  local reply = redis.pcall(unpack(cmd))
  if spec and not (type(reply) == 'table' and reply.err) then
    RULES[spec.log](cmd, reply, out, pre)
  end
  replies[k] = reply
end

if #out > 0 then
  append_entry(KEYS[1], KEYS[2], ARGV[1], ARGV[2], out)
end

if ARGV[3] == '1' then return replies[1] end
return replies
