-- The server's time in ms, as a number and as a decimal string.
local function now_ms()
  local t = rcall('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  return ms, string.format('%.0f', ms), t
end
