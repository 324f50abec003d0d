--[[
  Runs one write and collects its logged form: the commands its rule logs
  (includes/log-rules.lua) go to out, each with its view (includes/view.lua)
  in views. Shared by log-write.lua (writes sent by the producer) and the
  wrapper of users' scripts (lua/wrap/script-effects.lua), so that a write
  made inside a script is logged exactly as the same write sent alone.

  shape, when given, turns a RESP3 reply into the RESP2 form the rules read
  (a script may have switched its replies with redis.setresp(3)); the rules'
  own calls then run under RESP2 too. Returns the
  write's reply as Redis gave it: an error reply is a table with err, and
  logs nothing.
]]
local PRE, RULES
local function log_command(cmd, rule, spec, db, out, views, shape)
  local logged = #out
  local view = take_view(cmd, spec, db)
  local reply, given
  if rule == 'always' or rule == 'changed' then
    reply = redis.pcall(unpack(cmd))
    if not (type(reply) == 'table' and reply.err) and (rule == 'always' or changed(shape and shape(reply) or reply)) then push(out, cmd) end
  else
    if not RULES then PRE, RULES = load_rules() end
    if not RULES[rule] then return { err = 'ERR qsync: unknown log rule ' .. rule .. '; nothing was written' } end
    if shape then redis.setresp(2) end
    local pre = PRE[rule] and PRE[rule](cmd)
    if shape then redis.setresp(3) end
    -- A command Redis refuses inside a script may run as an equivalent
    -- (includes/pop-rules.lua); a flush runs keeping qsync's own keys
    -- (includes/keyspace-rules.lua).
    if RUN[rule] then
      reply = RUN[rule](cmd, db)
    else
      reply = redis.pcall(unpack(cmd))
    end
    if not (type(reply) == 'table' and reply.err) then
      if shape then redis.setresp(2) end
      given = RULES[rule](cmd, shape and shape(reply) or reply, out, pre, view, reply)
      if shape then redis.setresp(3) end
    end
  end
  -- A rule may log one write as several commands on its key (members popped
  -- in chunks): the first carries the view, the others follow from it;
  -- unless the rule gave their views.
  for j = logged + 1, #out do
    views[j] = given and given[j - logged] or (j == logged + 1 and view or same_key_view())
  end
  return reply
end
