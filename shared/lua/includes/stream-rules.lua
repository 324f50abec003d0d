--[[
  The log rules of stream commands (shared/commands.ts), added to PRE and
  RULES by load_rules (includes/log-rules.lua). Streams are logged as Redis
  7.0 propagates them (t_stream.c), in forms a replica applies exactly:
  - XADD with the ID it got (never *), and, when it was given a trim
    (MAXLEN or MINID, = or ~, LIMIT), MAXLEN = <the length it left>;
    nothing when NOMKSTREAM found no stream;
  - XTRIM as MAXLEN = <the length it left>, when it trimmed;
  - XGROUP CREATE and SETID with the group's ID as set ($ resolved) and
    its ENTRIESREAD (-1: not known); DESTROY, CREATECONSUMER when they
    changed something; DELCONSUMER when the consumer existed;
  - XREADGROUP, XCLAIM and XAUTOCLAIM as their effects on the group:
    XGROUP CREATECONSUMER for a consumer they created; for each pending
    entry they delivered or claimed, XCLAIM k g <owner> 0 <id> TIME <abs ms>
    RETRYCOUNT <count> FORCE JUSTID; XACK for one they dropped (its stream
    entry deleted); XGROUP SETID ... ENTRIESREAD when the group's last
    delivered ID or entries read moved.

  A delivery time is the master's clock during the write, read before and
  after it: when the clock did not tick in between, that is the time. When
  it did, the master's entry is set to the later reading (XCLAIM ... TIME on
  the master, less than a millisecond off), and that is logged, so that
  both sides hold the same. A replica whose clock is behind the master's
  applies a time still ahead of it as its own now (XCLAIM's rule), hence
  the clocks must agree (NTP), as for expiry.

  The rules that read a nested reply (entries, streams) read it as Redis
  gave it (raw): RESP2, or RESP3 inside a script that switched to it, where
  XREADGROUP's reply is a map of streams and a missing entry's fields nil.

  The rules of group commands return the views (includes/view.lua) of the
  commands they log: the stream's key is the 2nd argument of XCLAIM and
  XACK, the 3rd of XGROUP, and one XREADGROUP logs for several streams.
]]
--- @include "includes/view"
--- @include "includes/now"

local function stream_rules(PRE, RULES)
  local upper = string.upper

  -- A field of a flat field/value reply (XINFO).
  local function field(reply, name)
    for i = 1, #reply, 2 do
      if reply[i] == name then return reply[i + 1] end
    end
    return nil
  end

  -- The group's last delivered ID and entries read ('-1' when not known),
  -- or nil when there is no such group (or stream).
  local function group_state(key, group)
    local groups = redis.pcall('XINFO', 'GROUPS', key)
    if groups.err then return nil end
    for _, g in ipairs(groups) do
      if field(g, 'name') == group then
        local read = field(g, 'entries-read')
        return { last = field(g, 'last-delivered-id'), read = read and int(read) or '-1' }
      end
    end
    return nil
  end

  local function has_consumer(key, group, name)
    local consumers = redis.pcall('XINFO', 'CONSUMERS', key, group)
    if consumers.err then return false end
    for _, c in ipairs(consumers) do
      if field(c, 'name') == name then return true end
    end
    return false
  end

  -- The owner and delivery count of a pending entry, or nil. pcall: PRE
  -- runs before Redis checked the arguments, and an error raised here would
  -- end the whole call, with the writes before it in a batch not logged.
  local function pending(key, group, id)
    local p = redis.pcall('XPENDING', key, group, id, id, 1)
    if p.err or not p[1] then return nil end
    return p[1][2], p[1][4]
  end

  local function is_id(arg)
    return string.match(arg, '^%d+$') ~= nil or string.match(arg, '^%d+%-%d+$') ~= nil
  end

  -- A writer of the commands logged for one stream into out, each with its
  -- view in views: the key's expiry (at) with the first, ANY after it.
  local function logger(out, views, key, at)
    local first = true
    return function(cmd, keypos)
      push(out, cmd)
      views[#views + 1] = { keypos, first and at or ANY }
      first = false
    end
  end

  -- The state of a group command before it runs: the clock, the group, and
  -- whether the consumer existed.
  local function before(key, group, consumer)
    return { t = now_ms(), group = group_state(key, group), consumer = has_consumer(key, group, consumer) }
  end

  -- Logs what a group command did to one stream: the consumer it created,
  -- the pending entries it delivered (ids, delivered at time_of(now), where
  -- now is the master's clock during the write), the ones it dropped, and
  -- the group's move.
  local function log_group_effects(log, key, group, consumer, pre, delivered, dropped, time_of)
    if not pre.consumer and has_consumer(key, group, consumer) then
      log({ 'xgroup', 'CREATECONSUMER', key, group, consumer }, 3)
    end
    local now = now_ms()
    for _, id in ipairs(delivered) do
      local owner, count = pending(key, group, id)
      if owner then
        local at = int(time_of(now))
        if now ~= pre.t then rcall('XCLAIM', key, group, owner, '0', id, 'TIME', at, 'RETRYCOUNT', int(count), 'FORCE', 'JUSTID') end
        log({ 'xclaim', key, group, owner, '0', id, 'TIME', at, 'RETRYCOUNT', int(count), 'FORCE', 'JUSTID' }, 2)
      end
    end
    for _, id in ipairs(dropped) do
      log({ 'xack', key, group, id }, 2)
    end
    local after = group_state(key, group)
    if after and pre.group and (after.last ~= pre.group.last or after.read ~= pre.group.read) then
      log({ 'xgroup', 'SETID', key, group, after.last, 'ENTRIESREAD', after.read }, 3)
    end
  end

  local function at_now(now)
    return now
  end

  -- XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT n]] id field value...
  RULES.xadd = function(cmd, reply, out)
    if not reply then return end
    local i, trims = 3, false
    while i <= #cmd do
      local opt = upper(cmd[i])
      if opt == 'NOMKSTREAM' then
        i = i + 1
      elseif opt == 'MAXLEN' or opt == 'MINID' then
        trims = true
        i = i + 1
        if cmd[i] == '~' or cmd[i] == '=' then i = i + 1 end
        i = i + 1
      elseif opt == 'LIMIT' then
        i = i + 2
      else
        break
      end
    end
    local logged = { 'xadd', cmd[2] }
    if trims then
      logged[3], logged[4], logged[5] = 'MAXLEN', '=', int(rcall('XLEN', cmd[2]))
    end
    logged[#logged + 1] = reply
    for j = i + 1, #cmd do logged[#logged + 1] = cmd[j] end
    push(out, logged)
  end

  RULES.xtrim = function(cmd, reply, out)
    if reply > 0 then push(out, { 'xtrim', cmd[2], 'MAXLEN', '=', int(rcall('XLEN', cmd[2])) }) end
  end

  -- XGROUP <subcommand> key group ...: DELCONSUMER's reply (the consumer's
  -- pending count) does not say whether the consumer existed.
  PRE.xgroup = function(cmd)
    if #cmd == 5 and upper(cmd[2]) == 'DELCONSUMER' then return has_consumer(cmd[3], cmd[4], cmd[5]) end
    return false
  end

  RULES.xgroup = function(cmd, reply, out, existed)
    local sub = upper(cmd[2])
    if sub == 'CREATE' or sub == 'SETID' then
      local g = group_state(cmd[3], cmd[4])
      local logged = { 'xgroup', sub, cmd[3], cmd[4], g.last }
      for j = 6, #cmd do
        if upper(cmd[j]) == 'MKSTREAM' then logged[#logged + 1] = 'MKSTREAM' end
      end
      logged[#logged + 1] = 'ENTRIESREAD'
      logged[#logged + 1] = g.read
      push(out, logged)
    elseif sub == 'DESTROY' or sub == 'CREATECONSUMER' then
      if reply == 1 then push(out, cmd) end
    elseif sub == 'DELCONSUMER' and existed then
      push(out, cmd)
    end
  end

  -- XREADGROUP GROUP g c [COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...
  local function readgroup_args(cmd)
    local r = { keys = {} }
    local i = 2
    while i <= #cmd do
      local opt = upper(cmd[i])
      if opt == 'GROUP' then
        r.group, r.consumer = cmd[i + 1], cmd[i + 2]
        i = i + 3
      elseif opt == 'NOACK' then
        r.noack = true
        i = i + 1
      elseif opt == 'STREAMS' then
        for j = 1, math.floor((#cmd - i) / 2) do r.keys[j] = cmd[i + j] end
        break
      else
        i = i + 2
      end
    end
    return r
  end

  -- Redis refuses BLOCK inside a script, and would not wait there anyway:
  -- RUN (includes/pop-rules.lua) runs XREADGROUP without it, once its
  -- value checked as Redis checks it; the producer waits and tries again
  -- (producer/blocking.ts).
  RUN.xreadgroup = function(cmd)
    local call = { cmd[1] }
    local i = 2
    while i <= #cmd do
      local opt = upper(cmd[i])
      if opt == 'STREAMS' then
        for j = i, #cmd do call[#call + 1] = cmd[j] end
        break
      end
      local n = opt == 'GROUP' and 3 or (opt == 'COUNT' or opt == 'BLOCK') and 2 or 1
      if opt == 'BLOCK' and cmd[i + 1] then
        local ms = tonumber(cmd[i + 1])
        if not string.match(cmd[i + 1], '^%-?%d+$') or not ms or math.abs(ms) > 9.2e18 then
          return { err = 'ERR timeout is not an integer or out of range' }
        end
        if ms < 0 then return { err = 'ERR timeout is negative' } end
      else
        for j = i, math.min(i + n - 1, #cmd) do call[#call + 1] = cmd[j] end
      end
      i = i + n
    end
    return redis.pcall(unpack(call))
  end

  PRE.xreadgroup = function(cmd)
    local r = readgroup_args(cmd)
    r.before = {}
    if r.group then
      for _, key in ipairs(r.keys) do r.before[key] = before(key, r.group, r.consumer) end
    end
    return r
  end

  -- The reply lists each stream served with its entries; an entry of the
  -- consumer's history whose stream entry was deleted comes without fields
  -- and was not delivered again.
  RULES.xreadgroup = function(cmd, _, out, r, view, raw)
    if not raw then return nil end
    local at = {}
    for p = 1, #view, 2 do at[cmd[view[p]]] = at[cmd[view[p]]] or view[p + 1] end
    local views = {}
    local function served(key, entries)
      local delivered = {}
      if not r.noack then
        for _, e in ipairs(entries) do
          if e[2] then delivered[#delivered + 1] = e[1] end
        end
      end
      log_group_effects(logger(out, views, key, at[key]), key, r.group, r.consumer, r.before[key], delivered, {}, at_now)
    end
    if raw.map then
      for key, entries in pairs(raw.map) do served(key, entries) end
    else
      for _, s in ipairs(raw) do served(s[1], s[2]) end
    end
    return views
  end

  -- XCLAIM key group consumer min-idle id... [IDLE ms] [TIME ms] [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id]
  PRE.xclaim = function(cmd)
    local c = before(cmd[2], cmd[3], cmd[4])
    c.ids, c.had = {}, {}
    local i = 6
    while i <= #cmd and is_id(cmd[i]) do
      c.ids[#c.ids + 1] = cmd[i]
      if c.group then c.had[cmd[i]] = pending(cmd[2], cmd[3], cmd[i]) ~= nil end
      i = i + 1
    end
    while i <= #cmd do
      local opt = upper(cmd[i])
      if opt == 'IDLE' then
        c.idle = tonumber(cmd[i + 1])
      elseif opt == 'TIME' then
        c.time = tonumber(cmd[i + 1])
      end
      i = i + ((opt == 'FORCE' or opt == 'JUSTID') and 1 or 2)
    end
    return c
  end

  -- The ids of a claim's reply: entries ({id, fields}) or, with JUSTID, ids.
  local function claimed_ids(list)
    local ids, set = {}, {}
    for _, e in ipairs(list) do
      local id = type(e) == 'table' and e[1] or e
      ids[#ids + 1] = id
      set[id] = true
    end
    return ids, set
  end

  RULES.xclaim = function(cmd, _, out, c, view, raw)
    local key, group = cmd[2], cmd[3]
    local ids, claimed = claimed_ids(raw)
    local dropped = {}
    for _, id in ipairs(c.ids) do
      if c.had[id] and not claimed[id] and not pending(key, group, id) then dropped[#dropped + 1] = id end
    end
    -- XCLAIM's delivery time: TIME, or now minus IDLE, or now; now when that is before 0 or after now.
    local function time_of(now)
      local t = c.time or (c.idle and now - c.idle) or now
      if t < 0 or t > now then return now end
      return t
    end
    local views = {}
    log_group_effects(logger(out, views, key, view[2]), key, group, cmd[4], c, ids, dropped, time_of)
    return views
  end

  -- XAUTOCLAIM key group consumer min-idle start [COUNT n] [JUSTID]: its reply
  -- is the next start, the entries claimed, the IDs dropped from the PEL.
  PRE.xautoclaim = function(cmd)
    return before(cmd[2], cmd[3], cmd[4])
  end

  RULES.xautoclaim = function(cmd, _, out, c, view, raw)
    local views = {}
    local ids = claimed_ids(raw[2])
    log_group_effects(logger(out, views, cmd[2], view[2]), cmd[2], cmd[3], cmd[4], c, ids, raw[3] or {}, at_now)
    return views
  end
end
