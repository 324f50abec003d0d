#!lua
--[[
  Replaces one dead letter by an updated one, in place (`qsync dlq retry`
  after a new refusal). Nothing happens when the letter is no longer there
  (dropped or retried meanwhile).

  Input:
    KEYS[1] dead-letter list
    ARGV[1] the dead letter, exactly as read
    ARGV[2] its replacement

  Output:
    1 replaced, 0 not found
]]
local rcall = redis.call
local at = rcall('LPOS', KEYS[1], ARGV[1])
if not at then return 0 end
rcall('LSET', KEYS[1], at, ARGV[2])
return 1
