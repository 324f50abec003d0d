-- A Lua number holds integers exactly up to 2^53. An integer reply past it
-- is the new value of a counter (INCR, INCRBY, DECR, DECRBY, HINCRBY): the
-- digits of the stored value are returned instead of the rounded number.
local INEXACT = 9007199254740992
local function exact_integer(cmd, reply)
  if type(reply) ~= 'number' or (reply < INEXACT and reply > -INEXACT) then return reply end
  local name = cmd[1]
  if name == 'hincrby' then return rcall('HGET', cmd[2], cmd[3]) end
  if name == 'incr' or name == 'incrby' or name == 'decr' or name == 'decrby' then return rcall('GET', cmd[2]) end
  return reply
end
