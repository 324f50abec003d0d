#!lua
--[[
  Gives up the consumer lease if this token holds it.

  Input:
    KEYS[1] lease
    ARGV[1] token

  Output:
    1 released, 0 not held by this token
]]
local rcall = redis.call
if rcall('GET', KEYS[1]) == ARGV[1] then
  rcall('DEL', KEYS[1])
  return 1
end
return 0
