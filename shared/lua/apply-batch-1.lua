#!lua
--[[
  Applies a batch of log entries on the replica and moves the watermark in the
  same atomic step, so that every entry is applied exactly once however often
  a batch is sent. Entries at or below the watermark are skipped.

  If the replica refuses a command of a group, the commands before it stay
  applied and the watermark records how many ('part'), so a retry resumes
  after them instead of applying them twice.

  Parking (ARGV[3] = 'park'). An entry the replica refuses is parked instead
  of retried forever, in three steps: (1) this script decides it, moving the
  watermark past the entry and writing a pending record 'parked:<seq>'
  (index, commands done, time, error); (2) the consumer's confirmation on the
  master (park-5.lua) files the dead letter and trims the batch, in one step;
  (3) the consumer deletes the pending record. Why each entry ends up applied
  or parked, never lost and never both, wherever a consumer dies:
  - Before (1) nothing changed: entry S is still above the watermark, and
    the next apply that reaches it applies or parks it. The decision is made
    once, atomically with the watermark and with the commands of S that ran
    (recorded as 'done', never run again), so no two consumers racing can
    make it twice or both ways.
  - Between (1) and (2): S is at or below the watermark but still in the log.
    Every batch holding S is answered with S as a dead letter again, from its
    pending record, running nothing of it; so no consumer, the next one or a
    stale one, can confirm a batch past S without filing S.
  - (2) is atomic, for the lease holder only, and only while the head of the
    log is still what was applied (head.lua): S leaves the log exactly when its
    dead letter appears, once.
  - Between (2) and (3): the pending record stays behind, but S is in no
    batch any more, so it is never read again.
  Bytes that are not a qsync entry have no sequence and change nothing here:
  every batch holding them reports them, until (2) files them.

  One pass: each entry is checked and then run before the next is read.
  When an entry cannot be applied (a gap, a broken chain, not an entry under
  'halt', a refusal), the entries before it stay applied and the watermark
  is saved with them before the script returns; a retry skips them.
  Errors that are about the replica rather than the entry (read-only, out of
  memory, no permission...) never park: every entry would be parked. They
  stop the batch as in 'halt' mode.

  Expiry is decided by the master's clock. An entry carries, for each
  command, the master's view of the command's keys just before it ran
  (includes/view.lua); before a command runs, each of its keys is brought to
  that view: a key the master did not have is deleted, a key with another
  expiry gets the master's (PEXPIREAT, PERSIST). A key the master had but
  the replica does not (it expired here first: lag, or a clock ahead) cannot
  be rebuilt from the log: the command is held back and its keys become
  pending (includes/held.lua), until the consumer copies them from the
  master (restore-held-1.lua); the stream goes on meanwhile. Entries without
  views (older producers) apply as before.

  Input:
    KEYS[1] applied hash (seq, epoch, ts, part, parked:<seq>, held..., promoted), in the queue db
    ARGV[1] the master's epoch
    ARGV[2] queue db
    ARGV[3] on refusal: 'halt' or 'park'
    ARGV[4] the batch's header, a msgpack array of numbers, in log order:
            for an entry sent as bytes, its byte length in ARGV[5]; for a
            common entry the worker read (one command, its first key's
            view or none: consumer/drain/flat.ts), its kind, seq, ts, prev
            ts and db, then for a kind -(n + 1) (a command of n arguments,
            its name first) the master's view of its first key (ANY: none);
            a kind SET_KV is a SET of a key and a value (its two arguments
            sent), the view ANY.
            Its arguments are plain arguments from ARGV[8] on, in order, so
            that a run of SETs needs no Lua string made for it.
    ARGV[5] the entries sent as bytes, one after the other (one string
            rather than one argument each: a fifth of the cost of applying
            an entry goes into making an argument a Lua string)
    ARGV[6], ARGV[7] (a relay, qsync consume --relay; '' otherwise) this
            server's own log list and meta hash, in the queue db: each
            entry applied whole is appended to it in the same step
            (includes/relay.lua)
    ARGV[8]... the arguments of the common entries of ARGV[4]

  Output:
    {OK, watermark, applied count[, dead, pending, aligned, held back]}
                                       the last four when any is not empty or 0:
                                       dead: {position, seq, index, done, time, error} for each
                                       entry of the batch to file as a dead letter, in log order
                                       (seq 0: not a qsync entry); pending: keys waiting for a copy
                                       from the master (all of them, not only this batch's);
                                       aligned: keys deleted or given the master's expiry;
                                       held back: commands not run (a pending or copied key)
    {GAP, watermark, seq}              gap: seq follows watermark, entries between are gone
                                       (watermark: after the entries of the batch before it)
    {OTHER_LOG, replica epoch}         the replica follows another log (the master's sequence started over)
    {RESYNCING}                        a resync of the replica is under way or was interrupted
    {PROMOTED, epoch}                  the replica was promoted to master (its own log has that epoch):
                                       no master's log may be applied to it
    {BROKEN_CHAIN, watermark, seq}     entry seq does not follow the entry the replica applied last: the
                                       master lost its last writes and reused their sequence numbers
    {NOT_AN_ENTRY, position}           'halt': the entry at that position (1-based) is not a qsync entry
    {REFUSED, watermark, seq, index, error} the replica refused command index of entry seq
                                       (index 0: the entry's db could not be selected)
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/decode"
--- @include "includes/now"
--- @include "includes/view"
--- @include "includes/align"
--- @include "includes/held"
--- @include "includes/flush"
--- @include "includes/relay"

local header = cmsgpack.unpack(ARGV[4])
local entries = ARGV[5]
local epoch = ARGV[1]
local queue_db = ARGV[2]
-- qsync's own keys here start with the prefix of the watermark's key (includes/flush.lua).
local prefix = string.match(KEYS[1], '^([^:]*):')
local park = ARGV[3] == 'park'
-- A relay's own log, and the entries applied whole so far, to append with the watermark.
local relay_log, relay_meta, relayed = ARGV[6], ARGV[7], {}
if relay_log == '' then relay_log, relay_meta = nil, nil end
if not park and ARGV[3] ~= 'halt' then return redis.error_reply("ERR apply-batch: ARGV[3] must be 'halt' or 'park'") end
local cur = rcall('HMGET', KEYS[1], 'seq', 'epoch', 'part', 'ts', 'resyncing', 'held', 'heldPending', 'promoted')
-- A replica promoted to master follows no log any more: a stale consumer of
-- its old master must not touch it.
if cur[8] then return { PROMOTED, cur[8] } end
-- A resync owns the replica until it finishes: a stale worker's batch must
-- not land on a replica being rebuilt.
if cur[5] then return { RESYNCING } end
local watermark = tonumber(cur[1]) or 0
if cur[2] and cur[2] ~= epoch then return { OTHER_LOG, cur[2] } end

local part_seq, part_done = 0, 0
if cur[3] then
  local s, d = string.match(cur[3], '^(%d+):(%d+)$')
  part_seq, part_done = tonumber(s), tonumber(d)
end

-- Written with the watermark, in the queue db: pending parked records.
local fields = {}
local last, last_ts = watermark, nil

-- Held keys (includes/held.lua): whether the hash had any when the script
-- started, the highest marker, the pending count, and the fields this batch
-- read and changed (written by save()).
local held_on = cur[6] ~= false
local held_any = held_on
local held_max = tonumber(cur[6]) or 0
local held_pending = tonumber(cur[7]) or 0
local held_read, held_changes = {}, {}
local aligned, held_back = 0, 0

local pcall_redis, unpack = redis.pcall, unpack
local qdb = tonumber(queue_db)
-- The db selected now (nil: the queue db, or not known).
local db = nil
local function use_db(d)
  if d ~= db then
    local r = pcall_redis('SELECT', d)
    if type(r) == 'table' and r.err then return false end
    db = d
  end
  return true
end

-- Writes the held keys changed by this batch, or drops every held field
-- once none is pending and the watermark passed every marker. In the queue db.
local function save_held()
  if next(held_changes) then
    local f = {}
    for id, v in pairs(held_changes) do
      f[#f + 1] = id
      f[#f + 1] = v
      -- unpack() takes at most ~8000 values
      if #f >= 2000 then
        rcall('HSET', KEYS[1], unpack(f))
        f = {}
      end
    end
    rcall('HSET', KEYS[1], 'held', string.format('%.0f', held_max), 'heldPending', held_pending, unpack(f))
    held_changes = {}
    held_on = true
  elseif held_on and held_pending == 0 and last >= held_max then
    local names = {}
    for _, name in ipairs(rcall('HKEYS', KEYS[1])) do
      if string.sub(name, 1, 4) == 'held' then names[#names + 1] = name end
      if #names >= 4000 then
        rcall('HDEL', KEYS[1], unpack(names))
        names = {}
      end
    end
    if #names > 0 then rcall('HDEL', KEYS[1], unpack(names)) end
    held_on, held_any = false, false
  end
end

-- Saves the watermark (and pending records, held keys) once anything
-- changed; an entry done means that no entry is half done any more. Leaves
-- the script in the queue db.
local function save()
  rcall('SELECT', queue_db)
  db = nil
  save_held()
  if not last_ts and #fields == 0 then return end
  if last_ts then
    fields[#fields + 1] = 'seq'
    fields[#fields + 1] = string.format('%.0f', last)
    fields[#fields + 1] = 'ts'
    fields[#fields + 1] = string.format('%.0f', last_ts)
  end
  rcall('HSET', KEYS[1], 'epoch', epoch, unpack(fields))
  if last_ts then rcall('HDEL', KEYS[1], 'part') end
  if relay_log and #relayed > 0 then
    relay_entries(relay_meta, relay_log, queue_db, relayed)
    relayed = {}
  end
end

-- Errors that are about the replica itself, not about the entry. An ACL refusal
-- inside a script is 'ERR The user executing the script can't run this
-- command' on Redis 7.0, NOPERM on later versions. In a Redis Cluster, a key
-- whose slot is moving to another node meanwhile ('a non local key') or a
-- cluster that is down: the batch is sent again once the topology settles.
local NOT_THE_ENTRY = { READONLY = true, OOM = true, MISCONF = true, NOPERM = true, LOADING = true,
  MASTERDOWN = true, NOREPLICAS = true, MOVED = true, ASK = true, TRYAGAIN = true, CLUSTERDOWN = true }
local function about_the_replica(err)
  local lower = string.lower(err)
  return NOT_THE_ENTRY[string.match(err, '^(%u+)')] or string.find(lower, "can't run this command", 1, true)
    or string.find(lower, 'permission', 1, true) or string.find(lower, 'non local key', 1, true)
    or string.find(lower, 'cluster is down', 1, true)
end

-- A key's held state ('p<seq>', 'm<seq>' or false), as this batch left it.
local function held_get(id)
  local v = held_changes[id]
  if v ~= nil then return v end
  if not held_on then return false end
  v = held_read[id]
  if v == nil then
    use_db(qdb)
    v = rcall('HGET', KEYS[1], id)
    held_read[id] = v
  end
  return v
end

-- Makes a key pending: entry seq was held back because of it.
local function hold(id, seq)
  if held_parse(held_get(id)) ~= 'p' then held_pending = held_pending + 1 end
  held_changes[id] = 'p' .. string.format('%.0f', seq)
  held_any = true
end

-- The field of the key at position pos of cmd, run in db edb.
local function id_of(cmd, pos, edb)
  return held_id(tonumber(key_db(cmd, pos, edb)), cmd[pos])
end

-- Makes every key of the command pending except those copied at or after seq.
local function hold_all(cmd, view, seq, edb)
  held_back = held_back + 1
  for v = 1, #view, 2 do
    local id = id_of(cmd, view[v], edb)
    local kind, at = held_parse(held_get(id))
    if not (kind == 'm' and at >= seq) then hold(id, seq) end
  end
end

local replica_now = nil
local function replica_clock()
  replica_now = replica_now or now_ms()
  return replica_now
end

-- A call that may be refused (no permission, out of memory...): its reply,
-- or raises the error for prepare's caller to report as the command's.
local function call_or_refuse(...)
  local r = pcall_redis(...)
  if type(r) == 'table' and r.err then error(r, 0) end
  return r
end

-- Before command cmd of entry seq (db edb) runs: whether it runs, after its
-- keys were brought to the master's view of them. Leaves edb selected.
local FIRST_KEY_ANY_VIEW = { 2, ANY }
local function prepare(cmd, view, seq, edb)
  if view == FIRST_KEY_ANY then view = FIRST_KEY_ANY_VIEW end
  local n = #view
  if held_any then
    local pending, ahead = false, 0
    for v = 1, n, 2 do
      local kind, at = held_parse(held_get(id_of(cmd, view[v], edb)))
      if kind == 'p' then
        pending = true
      elseif kind == 'm' and at >= seq then
        ahead = ahead + 1
      end
    end
    if pending or ahead > 0 then
      -- In the copies of its keys, or of some of them: the others must be
      -- copied too, after it.
      if pending or ahead < n / 2 then
        hold_all(cmd, view, seq, edb)
      else
        held_back = held_back + 1
      end
      use_db(edb)
      return false
    end
  end
  local lost = false
  for v = 1, n, 2 do
    local want = view[v + 1]
    local pos = view[v]
    if want ~= ANY and use_db(tonumber(key_db(cmd, pos, edb))) then
      local outcome = align_key(call_or_refuse, cmd[pos], want, replica_clock)
      if outcome == 'aligned' then
        aligned = aligned + 1
      elseif outcome == 'lost' then
        lost = true
      end
    end
  end
  if lost then hold_all(cmd, view, seq, edb) end
  use_db(edb)
  return not lost
end

-- Runs an entry's commands not yet done. Returns nothing when all ran, or
-- the index of the refused command (0: its db) and the error. What ran
-- before a refused command stays applied (a script does not roll back).
local function run(e)
  if e[4] ~= db then
    -- pcall: an error raised here would end the script with the entries
    -- before it applied but the watermark not moved.
    local r = pcall_redis('SELECT', e[4])
    if type(r) == 'table' and r.err then return 0, r.err end
    db = e[4]
  end
  local first = 1
  if e[2] == part_seq then first = part_done + 1 end
  local cmds, views = e[5], e[7]
  for j = first, #cmds do
    local go = true
    if views then
      local ok, r = pcall(prepare, cmds[j], views[j], e[2], e[4])
      if not ok then
        -- A refused step of bringing the keys to the master's view is the command's refusal.
        if type(r) == 'table' and r.err then return j, r.err end
        error(r, 0)
      end
      go = r
    end
    if go then
      local cmd, r = cmds[j], nil
      if cmd[1] == 'flushdb' or cmd[1] == 'flushall' then
        -- Keeping qsync's own keys; an error raised there is the command's refusal.
        local ok, flushed = pcall(flush_keeping, cmd[1], tostring(e[4]), queue_db, prefix)
        r = ok and flushed or (type(flushed) == 'table' and flushed or { err = tostring(flushed) })
      else
        r = pcall_redis(unpack(cmd))
      end
      if type(r) == 'table' and r.err then return j, r.err end
    end
  end
end

local dead = {}
local applied = 0
-- Bytes that cannot be taken as an entry: filed as dead under 'park'; under
-- 'halt' the batch stops there (returned).
local function not_an_entry(pos)
  if not park then
    save()
    return { NOT_AN_ENTRY, pos }
  end
  dead[#dead + 1] = { pos, 0, 0, 0, now_ms(), 'not a qsync entry' }
end

-- Each entry names the time of the one before it (includes/entry.lua).
local prev_ts = tonumber(cur[4])
local unpack_next = cmsgpack.unpack_limit
local size = #entries
-- The position of the entry being decoded: an error raised meanwhile means
-- bytes that are not msgpack.
local decoding = nil

-- After entry seq (time ts, decoded e when there is) ran: index and err
-- name the command refused (nothing: every command ran). Returns the reply
-- when the batch stops there.
local function settle(pos, seq, ts, e, index, err)
  if index then
    local done = index - 1
    if index == 0 then done = seq == part_seq and part_done or 0 end
    if not park or about_the_replica(err) then
      save()
      rcall('HSET', KEYS[1], 'part', seq .. ':' .. done)
      return { REFUSED, last, seq, index, err }
    end
    local at = now_ms()
    fields[#fields + 1] = 'parked:' .. string.format('%.0f', seq)
    fields[#fields + 1] = index .. ' ' .. done .. ' ' .. string.format('%.0f', at) .. ' ' .. err
    dead[#dead + 1] = { pos, seq, index, done, at, err }
  else
    applied = applied + 1
    if relay_log then relayed[#relayed + 1] = e end
  end
  last, last_ts, prev_ts = seq, ts, ts
end

-- A relay logs the decoded entries it applies: it always takes the full path.
local quick_on = not relay_log

-- Whether the common entry seq (command name, first key key, the master's
-- view of it want) can run at once: the next one, no flush, its key, when
-- the view names one, as the master had it. False when it needs the full
-- path (a gap, a broken chain, a part done, held keys, a key to align, a
-- relay), nothing having run then. Leaves edb selected when true.
local function quick_ok(seq, prev, edb, name, key, want)
  if not quick_on or seq ~= last + 1 or seq == part_seq or (prev_ts and prev ~= prev_ts) or held_any
    or name == 'flushdb' or name == 'flushall' or (edb ~= db and not use_db(edb)) then
    return false
  end
  return not want or pcall_redis('PEXPIRETIME', key) == want
end

-- The error of a reply, or nil.
local function refusal(r)
  if type(r) == 'table' and r.err then return r.err end
  return nil
end

-- Takes the decoded entry e at position pos (the full way). Returns the
-- reply when the batch stops there.
local function take(pos, e)
  if e[2] > last then
    if e[2] ~= last + 1 then
      save()
      return { GAP, last, e[2] }
    end
    if prev_ts and e[6] ~= prev_ts then
      save()
      return { BROKEN_CHAIN, last, e[2] }
    end
    return settle(pos, e[2], e[3], e, run(e))
  end
  -- Pending records are in the queue db.
  if db then
    rcall('SELECT', queue_db)
    db = nil
  end
  local rec = rcall('HMGET', KEYS[1], 'parked:' .. string.format('%.0f', e[2]))[1]
  if rec then
    local index, done, at, err = string.match(rec, '^(%d+) (%d+) (%d+) (.*)$')
    dead[#dead + 1] = { pos, e[2], tonumber(index), tonumber(done), tonumber(at), err }
  end
end

-- Takes the entry at position pos sent as bytes (offset to ends; seq...
-- what quick_entry read of it, when it could): the quick way, or the full
-- way. Returns the reply when the batch stops there.
local function apply_bytes(pos, offset, ends, seq, ts, prev, edb, cmd, want)
  if seq and quick_ok(seq, prev, edb, cmd[1], cmd[2], want) then
    local err = refusal(pcall_redis(unpack(cmd)))
    return settle(pos, seq, ts, nil, err and 1, err)
  end
  decoding = pos
  local after, e = unpack_next(entries, 1, offset)
  decoding = nil
  -- An entry is exactly its bytes: one that decodes past them is not one.
  if after ~= ends and not (after == -1 and ends == size) then e = nil end
  if not is_entry(e) then return not_an_entry(pos) end
  return take(pos, e)
end

-- A common entry sent by the worker as numbers and arguments (ARGV[4]).
local SET_KV = -1
local nargs = #ARGV

-- Takes the common entry at position pos, of the given kind, its arguments
-- from ARGV[a] on (n of them): the quick way, or the full way, decoded from
-- them as cmsgpack would have. Returns the reply when the batch stops there.
local function apply_flat(pos, kind, a, n, seq, ts, prev, edb, want)
  local set = kind == SET_KV
  local name, key = 'set', ARGV[a]
  if not set then name, key = ARGV[a], ARGV[a + 1] end
  if quick_ok(seq, prev, edb, name, key, want) then
    local r
    if set then r = pcall_redis('SET', key, ARGV[a + 1]) else r = pcall_redis(unpack(ARGV, a, a + n - 1)) end
    local err = refusal(r)
    return settle(pos, seq, ts, nil, err and 1, err)
  end
  local cmd = set and { 'set', key, ARGV[a + 1] } or { unpack(ARGV, a, a + n - 1) }
  return take(pos, { 1, seq, ts, edb, { cmd }, prev, { want and { 2, want } or FIRST_KEY_ANY } })
end

-- Plain SETs (three arguments, no key to check) in a row, in one db, reach
-- the replica as one MSET when the run ends: the same writes in the same
-- order, at a fraction of the cost of a call each. The run's entries count
-- as applied meanwhile; MSET writes all of its keys or none (a refusal comes
-- before it runs), so a refused run is taken again entry by entry, up to its
-- last entry (replay_until), from the state before it (sets_*).
local sets, sets_db, sets_at = {}, nil, nil
local sets_last, sets_last_ts, sets_prev_ts, sets_applied = nil, nil, nil, nil
local replay_until = 0
-- unpack() takes at most ~8000 values
local SETS_MAX = 2000

-- Sends the run of SETs; false when the replica refused it (nothing was
-- written), the watermark and the count then back to before the run.
local function flush_sets()
  if #sets == 0 then return true end
  local r = pcall_redis('MSET', unpack(sets))
  sets = {}
  if refusal(r) then
    last, last_ts, prev_ts, applied = sets_last, sets_last_ts, sets_prev_ts, sets_applied
    return false
  end
  return true
end

-- Whether the plain SET seq at position pos joins the run of SETs.
local function joins_run(pos, seq, prev, edb)
  if not quick_on or pos <= replay_until or seq ~= last + 1 or seq == part_seq
    or (prev_ts and prev ~= prev_ts) or held_any or #sets >= SETS_MAX then
    return false
  end
  if #sets > 0 then return edb == sets_db end
  return edb == db or use_db(edb)
end

-- A place in the batch: the entry's position, its index in the header, the
-- byte offset (0 based) of the next entry sent as bytes, the argument of
-- the next common entry.
local function next_place(h, offset, a)
  local kind = header[h]
  if kind >= 0 then return h + 1, offset + kind, a end
  if kind == SET_KV then return h + 5, offset, a + 2 end
  return h + 6, offset, a - kind - 1
end

local function place_of(pos)
  local h, offset, a = 1, 0, 8
  for _ = 1, pos - 1 do h, offset, a = next_place(h, offset, a) end
  return h, offset, a
end

-- A run of common SETs from position pos (place h, argument a): as many as
-- follow one another (each the next seq, linked to the one before, in one
-- db, all their arguments sent) reach the replica as one MSET of their
-- arguments as they came, with no Lua value made for any of them. Returns
-- the position, place and argument after the run; nothing when the entry at
-- pos starts none (it takes the other way); false and the run's last
-- position when the replica refused the MSET (nothing was written).
local function set_run(pos, h, a)
  local edb = header[h + 4]
  if edb ~= db and not use_db(edb) then return nil end
  local l, lts, p, from, max = last, prev_ts, pos, a, pos + SETS_MAX
  local seq = header[h + 1]
  while header[h] == SET_KV and seq == l + 1 and (not lts or header[h + 3] == lts) and header[h + 4] == edb
    and seq ~= part_seq and a < nargs and p < max do
    l, lts = seq, header[h + 2]
    h, a, p = h + 5, a + 2, p + 1
    seq = header[h + 1]
  end
  if p == pos then return nil end
  if refusal(pcall_redis('MSET', unpack(ARGV, from, a - 1))) then return false, p - 1 end
  applied = applied + (p - pos)
  last, last_ts, prev_ts = l, lts, lts
  return p, h, a
end

-- Common entries of other commands in a row from position pos (place h,
-- argument a), each run at once while it can be (the next seq, linked, in
-- the db selected, its key as the master had it): one tight pass over the
-- header, with no Lua value made per entry. Returns the position, place
-- and argument after the entries taken (none: the entry at pos takes the
-- full way), or false and the reply when the batch stops there.
local function quick_run(pos, h, a)
  local p = pos
  local kind = header[h]
  local edb = header[h + 4]
  if edb ~= db and not use_db(edb) then return p, h, a end
  while kind and kind < SET_KV do
    local seq, ts, n = header[h + 1], header[h + 2], -kind - 1
    local want, name = header[h + 5], ARGV[a]
    if seq ~= last + 1 or seq == part_seq or (prev_ts and header[h + 3] ~= prev_ts) or header[h + 4] ~= edb
      or a + n - 1 > nargs or name == 'flushdb' or name == 'flushall'
      or (want ~= ANY and pcall_redis('PEXPIRETIME', ARGV[a + 1]) ~= want) then
      break
    end
    local err = refusal(pcall_redis(unpack(ARGV, a, a + n - 1)))
    if err then
      local stop = settle(p, seq, ts, nil, 1, err)
      if stop then return false, stop end
    else
      applied = applied + 1
      last, last_ts, prev_ts = seq, ts, ts
    end
    h, a, p = h + 6, a + n, p + 1
    kind = header[h]
  end
  return p, h, a
end

-- Takes the entry at position pos (place h, offset, a) any other way than
-- a run of common SETs: returns the next position and place, or nothing
-- and the reply when the batch stops there. A run of SETs read from bytes
-- is sent before anything else runs or can fail.
local function apply_next(pos, h, offset, a)
  local kind = header[h]
  local nh, noffset, na = next_place(h, offset, a)
  local seq, ts, prev, edb, cmd, want, k, v
  if kind >= 0 then
    if quick_on and noffset <= size then seq, ts, prev, edb, cmd, want = quick_entry(entries, offset + 1, noffset) end
    if seq and not want and #cmd == 3 and cmd[1] == 'set' then k, v = cmd[2], cmd[3] end
  else
    seq, ts, prev, edb, want = header[h + 1], header[h + 2], header[h + 3], header[h + 4], ANY
    if kind ~= SET_KV then want = header[h + 5] end
    if type(want) ~= 'number' or type(edb) ~= 'number' or na - 1 > nargs or na - 1 < a then
      error('the common entry at position ' .. pos .. ' is cut short', 0)
    end
    if want == ANY then want = nil end
    if kind == SET_KV then k, v = ARGV[a], ARGV[a + 1] end
  end
  if k and joins_run(pos, seq, prev, edb) then
    if #sets == 0 then
      sets_db, sets_at = edb, { pos, h, offset, a }
      sets_last, sets_last_ts, sets_prev_ts, sets_applied = last, last_ts, prev_ts, applied
    end
    sets[#sets + 1] = k
    sets[#sets + 1] = v
    applied = applied + 1
    last, last_ts, prev_ts = seq, ts, ts
    return pos + 1, nh, noffset, na
  end
  if not flush_sets() then
    replay_until = pos - 1
    return sets_at[1], sets_at[2], sets_at[3], sets_at[4]
  end
  local stop
  if kind >= 0 then
    stop = apply_bytes(pos, offset, noffset, seq, ts, prev, edb, cmd, want)
  else
    stop = apply_flat(pos, kind, a, na - a, seq, ts, prev, edb, want)
  end
  if stop then return nil, stop end
  return pos + 1, nh, noffset, na
end

-- Applies the entries from position pos (at place h, offset, a) on;
-- returns the reply when the batch stops early, nothing when every entry
-- was taken. A run of SETs is sent before the end.
local function apply_from(pos, h, offset, a)
  local nheader = #header
  while true do
    if h > nheader then
      if flush_sets() then return end
      replay_until = pos - 1
      pos, h, offset, a = sets_at[1], sets_at[2], sets_at[3], sets_at[4]
    else
      local after, after_h, after_a
      local kind = header[h]
      if kind == SET_KV and #sets == 0 and pos > replay_until and quick_on and not held_any then
        after, after_h, after_a = set_run(pos, h, a)
      elseif kind < SET_KV and #sets == 0 and quick_on and not held_any then
        after, after_h, after_a = quick_run(pos, h, a)
        if after == false then return after_h end
        if after == pos then after = nil end
      end
      if after then
        pos, h, a = after, after_h, after_a
      elseif after == false then
        -- Refused as one MSET: taken again entry by entry.
        replay_until = after_h
      else
        pos, h, offset, a = apply_next(pos, h, offset, a)
        if not pos then return h end
      end
    end
  end
end

-- One pcall for the batch rather than one per entry (a tenth of the cost of
-- applying an entry): cmsgpack raises on bytes that are not msgpack, and the
-- batch goes on after them.
local from = 1
while true do
  local ok, out = pcall(apply_from, from, place_of(from))
  if ok then
    if out then return out end
    break
  end
  if not decoding then
    -- Anything else is unexpected: what ran is kept with the watermark, so
    -- that a retry goes on after it rather than applying it twice (a run of
    -- SETs not sent did not run).
    if #sets > 0 then last, last_ts, applied = sets_last, sets_last_ts, sets_applied end
    save()
    return redis.error_reply('ERR apply-batch: ' .. (type(out) == 'table' and tostring(out.err) or tostring(out)))
  end
  local at = decoding
  decoding = nil
  local stop = not_an_entry(at)
  if stop then return stop end
  from = at + 1
end

save()
if #dead == 0 and held_pending == 0 and aligned == 0 and held_back == 0 then return { OK, last, applied } end
return { OK, last, applied, dead, held_pending, aligned, held_back }
