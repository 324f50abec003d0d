--[[
  The log rules of the writes on whole keys and dbs, of the commands that
  store a result, and of GEOADD and BITFIELD, added to PRE, RULES and RUN by
  load_rules (includes/log-rules.lua). Each is logged as its effect where
  the result could depend on the server (the float math of geo searches,
  the locale of SORT ALPHA), else as Redis 7.0 propagates it:
  - MOVE k db: `COPY k k DB db REPLACE` + `DEL k`, when it moved (the view,
    '1:2:1l' in the command table, is of k here and, overwritten, of k in
    db: the COPY's arguments 2 and 3, includes/view.lua key_db).
  - RESTORE: `RESTORE k <abs ms> payload ABSTTL REPLACE` (or ttl 0 and no
    ABSTTL for a key without expiry; `DEL k` when the time had passed):
    the absolute expiry the key got; IDLETIME and FREQ, the master's own
    eviction statistics, are left out.
  - FLUSHDB / FLUSHALL: as the name alone, run (RUN.flush) keeping qsync's
    own keys, on both sides (includes/flush.lua).
  - a stored sorted set (ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE,
    GEOSEARCHSTORE dst, GEORADIUS / GEORADIUSBYMEMBER ... STORE or
    STOREDIST dst): `DEL dst` + `ZADD dst score member ...` in chunks, its
    members and scores as stored (scores as Redis prints them, %.17g, which
    read back to the same doubles); nothing for a GEORADIUS without STORE.
  - SORT ... STORE dst: `DEL dst` + `RPUSH dst ...` in chunks; nothing
    without STORE.
  - GEOADD: `ZADD k score member ...` with the scores the members have
    after it (Redis propagates the same ZADD).
  - BITFIELD: as sent when it has SET or INCRBY; a read otherwise.
  QUEUE (the queue's meta key and db) is filled by open_log
  (includes/log-open.lua), before any write runs.
]]
--- @include "includes/flush"

local QUEUE = {}

local function keyspace_rules(RUN, RULES)
  -- Members are read and logged in slices of this many (a ZADD of twice as
  -- many arguments stays below what a Lua call takes on the replica).
  local SLICE = 2500

  -- A key rewritten as a whole by a write: DEL, then its members.
  local function push_zset_state(out, key)
    push(out, { 'del', key })
    local n = rcall('ZCARD', key)
    for from = 0, n - 1, SLICE do
      local part = rcall('ZRANGE', key, from, from + SLICE - 1, 'WITHSCORES')
      local cmd = { 'zadd', key }
      for i = 1, #part, 2 do
        cmd[#cmd + 1] = part[i + 1]
        cmd[#cmd + 1] = part[i]
      end
      push(out, cmd)
    end
  end

  local function push_list_state(out, key)
    push(out, { 'del', key })
    local n = rcall('LLEN', key)
    for from = 0, n - 1, SLICE do
      local cmd = { 'rpush', key }
      for _, v in ipairs(rcall('LRANGE', key, from, from + SLICE - 1)) do cmd[#cmd + 1] = v end
      push(out, cmd)
    end
  end

  -- The key named by the last STORE or STOREDIST option from argument at
  -- on (cmd[1] is the name), skipping the arguments of the options skip
  -- names (option = how many it takes); nil without one.
  local function destination(cmd, at, skip)
    local dst = nil
    while at <= #cmd do
      local opt = string.upper(cmd[at])
      if opt == 'STORE' or opt == 'STOREDIST' then
        dst = cmd[at + 1]
        at = at + 2
      else
        at = at + 1 + (skip[opt] or 0)
      end
    end
    return dst
  end

  RULES.move = function(cmd, reply, out)
    if reply == 1 then
      push(out, { 'copy', cmd[2], cmd[2], 'DB', cmd[3], 'REPLACE' })
      push(out, { 'del', cmd[2] })
    end
  end

  RULES.restore = function(cmd, _, out)
    local at = rcall('PEXPIRETIME', cmd[2])
    if at > 0 then
      push(out, { 'restore', cmd[2], int(at), cmd[4], 'ABSTTL', 'REPLACE' })
    elseif at == -1 then
      push(out, { 'restore', cmd[2], '0', cmd[4], 'REPLACE' })
    else
      push(out, { 'del', cmd[2] })
    end
  end

  RUN.flush = function(cmd, db)
    return flush_keeping(string.lower(cmd[1]), db, QUEUE.db, QUEUE.prefix)
  end

  RULES.flush = function(cmd, _, out)
    push(out, { string.lower(cmd[1]) })
  end

  RULES.zstore = function(cmd, _, out)
    push_zset_state(out, cmd[2])
  end

  -- GEORADIUS k lon lat radius unit ..., GEORADIUSBYMEMBER k member radius unit ...
  local GEO_SKIP = { COUNT = 1 }
  RULES.georadius = function(cmd, _, out)
    local dst = destination(cmd, string.lower(cmd[1]) == 'georadius' and 7 or 6, GEO_SKIP)
    if dst then push_zset_state(out, dst) end
  end

  local SORT_SKIP = { BY = 1, GET = 1, LIMIT = 2 }
  RULES.sortstore = function(cmd, _, out)
    local dst = destination(cmd, 3, SORT_SKIP)
    if dst then push_list_state(out, dst) end
  end

  RULES.geoadd = function(cmd, _, out)
    local at = 3
    while at <= #cmd do
      local opt = string.upper(cmd[at])
      if opt ~= 'NX' and opt ~= 'XX' and opt ~= 'CH' then break end
      at = at + 1
    end
    local members = {}
    for i = at + 2, #cmd, 3 do members[#members + 1] = cmd[i] end
    local scores = rcall('ZMSCORE', cmd[2], unpack(members))
    local zadd = { 'zadd', cmd[2] }
    for i = 1, #members do
      if scores[i] then
        zadd[#zadd + 1] = scores[i]
        zadd[#zadd + 1] = members[i]
      end
    end
    if #zadd > 2 then push(out, zadd) end
  end

  RULES.bitfield = function(cmd, _, out)
    for i = 3, #cmd do
      local opt = string.upper(cmd[i])
      if opt == 'SET' or opt == 'INCRBY' then
        push(out, cmd)
        return
      end
    end
  end
end
