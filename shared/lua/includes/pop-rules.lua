--[[
  The log rules of the pops from the first of several keys that has
  something (BLPOP, BRPOP, BZPOPMIN, BZPOPMAX, LMPOP, BLMPOP, ZMPOP, BZMPOP)
  and of the blocking moves (BLMOVE, BRPOPLPUSH), added to RULES by
  load_rules (includes/log-rules.lua). Each is logged as Redis 7.0
  propagates it (t_list.c, t_zset.c): the pop of the one key the reply names
  (LPOP / RPOP k <count popped>; ZREM k <members popped>, exact whatever the
  order of equal scores), LMOVE / RPOPLPUSH without the timeout.

  A blocking command never blocks inside a script: with nothing to pop its
  reply is nil, and nothing is logged; the producer waits and tries again
  (producer/blocking.ts). Replies are read as RESP2 gives them, or
  flattened (a script's RESP3 replies, see wrap/script-effects.lua).

  Redis refuses BLPOP, BRPOP, BZPOPMIN, BZPOPMAX, BLMOVE and BRPOPLPUSH
  inside a script: RUN[rule](cmd), which pop_rules fills and log_command
  (includes/log-command.lua) calls instead of the command, runs them as
  LMPOP, ZMPOP, LMOVE and RPOPLPUSH (the timeout checked first, as Redis
  checks it), and answers in the blocking command's own shape.

  push_members(out, head, members, from, step) is log-rules.lua's: it logs
  members in chunks.
]]
local RUN = {}
local function pop_rules(RULES, push_members)
  local function list_pop(out, left, key, count)
    push(out, { left and 'lpop' or 'rpop', key, tostring(count) })
  end

  RULES.bpop = function(cmd, reply, out)
    if reply then list_pop(out, string.lower(cmd[1]) == 'blpop', reply[1], 1) end
  end

  RULES.bzpop = function(_, reply, out)
    if reply then push(out, { 'zrem', reply[1], reply[2] }) end
  end

  RULES.bmove = function(cmd, reply, out)
    if not reply then return end
    local moved = { string.sub(string.lower(cmd[1]), 2) }
    for a = 2, #cmd - 1 do moved[a] = cmd[a] end
    push(out, moved)
  end

  -- LEFT / RIGHT follow the keys, after their count: the first argument of
  -- LMPOP, the second of BLMPOP (after the timeout).
  local function left(cmd)
    local at = string.sub(string.lower(cmd[1]), 1, 1) == 'b' and 3 or 2
    return string.upper(cmd[at + tonumber(cmd[at]) + 1]) == 'LEFT'
  end

  RULES.lmpop = function(cmd, reply, out)
    if not reply then return end
    local count = type(reply[2]) == 'table' and #reply[2] or #reply - 1
    list_pop(out, left(cmd), reply[1], count)
  end

  RULES.zmpop = function(_, reply, out)
    if not reply then return end
    if type(reply[2]) ~= 'table' then return push_members(out, { 'zrem', reply[1] }, reply, 2, 2) end
    local members = {}
    for j, pair in ipairs(reply[2]) do members[j] = pair[1] end
    push_members(out, { 'zrem', reply[1] }, members, 1, 1)
  end

  -- Redis's own errors for a bad timeout (getTimeoutFromObjectOrReply).
  local function timeout_error(timeout)
    local seconds = tonumber(timeout)
    if not seconds or seconds ~= seconds or string.find(timeout, '^%s') or string.find(timeout, '%s$') then
      return { err = 'ERR timeout is not a float or out of range' }
    end
    if seconds * 1000 > 9.2e18 then return { err = 'ERR timeout is out of range' } end
    if math.ceil(seconds * 1000) < 0 then return { err = 'ERR timeout is negative' } end
    return nil
  end

  -- BLPOP k1 k2 timeout as LMPOP 2 k1 k2 LEFT (and the like): the reply,
  -- and whether it popped.
  local function pop_first(cmd, name, where)
    local bad = timeout_error(cmd[#cmd])
    if bad then return bad, false end
    local call = { name, tostring(#cmd - 2) }
    for a = 2, #cmd - 1 do call[a + 1] = cmd[a] end
    call[#call + 1] = where
    local reply = redis.pcall(unpack(call))
    return reply, type(reply) == 'table' and not reply.err
  end

  RUN.bpop = function(cmd)
    local reply, popped = pop_first(cmd, 'LMPOP', string.lower(cmd[1]) == 'blpop' and 'LEFT' or 'RIGHT')
    if not popped then return reply end
    return { reply[1], reply[2][1] }
  end

  RUN.bzpop = function(cmd)
    local reply, popped = pop_first(cmd, 'ZMPOP', string.lower(cmd[1]) == 'bzpopmin' and 'MIN' or 'MAX')
    if not popped then return reply end
    return { reply[1], reply[2][1][1], reply[2][1][2] }
  end

  RUN.bmove = function(cmd)
    local bad = timeout_error(cmd[#cmd])
    if bad then return bad end
    local call = { string.sub(string.lower(cmd[1]), 2) }
    for a = 2, #cmd - 1 do call[a] = cmd[a] end
    return redis.pcall(unpack(call))
  end
end
