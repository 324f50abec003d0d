--[[
  How each write is turned into the deterministic form that is logged (the
  rule names come from the command table in shared/commands.ts).
  PRE[rule](cmd) runs before the write and may return a value for the rule.
  RULES[rule](cmd, reply, out, pre, view, raw) appends the logged commands to
  out; view is the write's (includes/view.lua), raw its reply as Redis gave it
  (RESP3 inside a script that switched to it; reply is then in the RESP2 form,
  flattened). A rule whose logged commands name
  their keys elsewhere than the write returns their views, one for each
  command it appended, in order; otherwise the first carries the write's
  view and the others follow from it.
]]
local function push(out, cmd)
  out[#out + 1] = cmd
end

-- Lua numbers are doubles: format integral ones without an exponent.
local function int(n)
  return string.format('%.0f', n)
end

--- @include "includes/pop-rules"
--- @include "includes/keyspace-rules"

--- @include "includes/changed"

--- @include "includes/stream-rules"

-- The rules other than 'always' and 'changed', built only by the calls that
-- need them: a script rebuilds every function it defines on each call, and
-- most writes need none of these.
local function load_rules()
  -- Commands with many members are split, so that no logged command has more
  -- arguments than a Lua call can take on the replica.
  local CHUNK = 5000
  local function push_members(out, head, members, from, step)
    local cmd = { head[1], head[2] }
    for i = from, #members, step do
      cmd[#cmd + 1] = members[i]
      if #cmd - 2 >= CHUNK then
        push(out, cmd)
        cmd = { head[1], head[2] }
      end
    end
    if #cmd > 2 then push(out, cmd) end
  end

  -- The string key after a write that set it: its value and absolute expiry.
  local function push_string_state(out, key, value)
    local at = rcall('PEXPIRETIME', key)
    if at > 0 then
      push(out, { 'set', key, value, 'PXAT', int(at) })
    elseif at == -1 then
      push(out, { 'set', key, value })
    else
      push(out, { 'del', key })
    end
  end

  -- The expiry of a key after a write that changed it, as an absolute time.
  local function push_expiry_state(out, key)
    local at = rcall('PEXPIRETIME', key)
    if at > 0 then
      push(out, { 'pexpireat', key, int(at) })
    elseif at == -1 then
      push(out, { 'persist', key })
    else
      push(out, { 'del', key })
    end
  end


  local PRE = {}

  -- SET applies unless NX or XX stops it; with GET its reply does not say which.
  PRE.set = function(cmd)
    for i = 4, #cmd do
      local opt = string.upper(cmd[i])
      if opt == 'NX' then return rcall('EXISTS', cmd[2]) == 0 end
      if opt == 'XX' then return rcall('EXISTS', cmd[2]) == 1 end
    end
    return true
  end

  -- PFCOUNT of one key caches the count in the value's header (byte 16, top bit
  -- set while stale): it changes the value only when the cache was stale.
  PRE.pfcount = function(cmd)
    if #cmd ~= 2 then return false end
    local b = redis.pcall('GETRANGE', cmd[2], 15, 15)
    return type(b) == 'string' and #b == 1 and string.byte(b) >= 128
  end

  local RULES = {}
  pop_rules(RULES, push_members)
  keyspace_rules(RUN, RULES)

  RULES.always = function(cmd, _, out)
    push(out, cmd)
  end

  RULES.changed = function(cmd, reply, out)
    if changed(reply) then push(out, cmd) end
  end

  RULES.set = function(cmd, _, out, applies)
    if applies then push_string_state(out, cmd[2], cmd[3]) end
  end

  RULES.setex = function(cmd, _, out)
    push_string_state(out, cmd[2], cmd[4])
  end

  RULES.setnx = function(cmd, reply, out)
    if reply == 1 then push(out, { 'set', cmd[2], cmd[3] }) end
  end

  RULES.getset = function(cmd, _, out)
    push_string_state(out, cmd[2], cmd[3])
  end

  RULES.getdel = function(cmd, reply, out)
    if reply then push(out, { 'del', cmd[2] }) end
  end

  RULES.getex = function(cmd, reply, out)
    if reply and #cmd > 2 then push_expiry_state(out, cmd[2]) end
  end

  RULES.expire = function(cmd, reply, out)
    if reply == 1 then push_expiry_state(out, cmd[2]) end
  end

  -- The result as the key's whole state, like SET: on the replica KEEPTTL
  -- would keep whatever expiry the replica's copy has.
  RULES.incrbyfloat = function(cmd, reply, out)
    push_string_state(out, cmd[2], reply)
  end

  RULES.hincrbyfloat = function(cmd, reply, out)
    push(out, { 'hset', cmd[2], cmd[3], reply })
  end

  RULES.spop = function(cmd, reply, out)
    if type(reply) == 'string' then
      push(out, { 'srem', cmd[2], reply })
    elseif type(reply) == 'table' then
      push_members(out, { 'srem', cmd[2] }, reply, 1, 1)
    end
  end

  RULES.zpop = function(cmd, reply, out)
    push_members(out, { 'zrem', cmd[2] }, reply, 1, 2)
  end

  RULES.pop = function(cmd, reply, out)
    if not reply then return end
    if cmd[3] == nil then
      push(out, { cmd[1], cmd[2] })
    elseif #reply > 0 then
      push(out, { cmd[1], cmd[2], tostring(#reply) })
    end
  end

  RULES.pfcount = function(cmd, _, out, stale)
    if stale then push(out, cmd) end
  end

  stream_rules(PRE, RULES)
  return PRE, RULES
end
