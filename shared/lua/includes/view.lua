--[[
  The master's view of the keys of a logged command (the 7th field of an
  entry, includes/entry.lua): a flat list { position, expiry, position,
  expiry... }, one pair per key, where position is the key's place in the
  logged command (2 for the first argument) and expiry is what PEXPIRETIME
  said just before the write: -2 absent (or expired), -1 no expiry, else the
  absolute time in ms; ANY for a key the logged form overwrites whatever it
  held (its state does not matter, but the replica must know it is touched).
  The most common view, one key overwritten (SET k v), { 2, ANY }, is
  written as the number FIRST_KEY_ANY instead: smaller, and cheaper to pack.
]]
local ANY = -3
local FIRST_KEY_ANY = 0

-- The view of a pop logged on the one key it popped from (the spec's flag
-- p, BLPOP k1 k2 0 logged as LPOP k2 1), from the view of all its keys:
-- Redis pops from the first that exists, the logged form's first argument.
local function popped_view(view)
  for v = 2, #view, 2 do
    if view[v] ~= -2 then return { 2, view[v] } end
  end
  return {}
end

-- The db of the key at position pos of cmd, run in db: COPY ... DB n writes
-- its destination in db n.
local function key_db(cmd, pos, db)
  if pos == 3 and #cmd > 3 and string.lower(cmd[1]) == 'copy' then
    for j = 4, #cmd - 1 do
      if string.upper(cmd[j]) == 'DB' then return cmd[j + 1] end
    end
  end
  return db
end

-- The keys of XREADGROUP ... STREAMS k1 k2 id1 id2 (spec '@<from>'): the
-- first half of the arguments after STREAMS, looked for from argument from.
local function streams_range(cmd, from)
  for a = from, #cmd - 1 do
    if string.upper(cmd[a + 1]) == 'STREAMS' then return a + 1, a + math.floor((#cmd - 1 - a) / 2), 1, '' end
  end
  return 1, 0, 1, ''
end

-- The arguments a key spec names in a command of n arguments (the compact
-- form of viewSpec in shared/commands.ts): first, last, step, and the flag
-- that says which keys the logged form overwrites. A spec that finds its
-- keys by the arguments (@<from>) needs the command, cmd.
local function spec_range(spec, n, cmd)
  local from = string.match(spec, '^@(%d+)$')
  if from then return streams_range(cmd, tonumber(from)) end
  local first, last, step, flag = string.match(spec, '^(%d+):(%-?%d+):(%d+)(%a?)$')
  if not first then
    first, flag = string.match(spec, '^(%d+)(%a?)$')
    last, step = first, 1
  end
  first, last, step = tonumber(first), tonumber(last), tonumber(step)
  if last < 0 then last = n + last + 1 end
  if last > n then last = n end
  return first, last, step, flag
end

-- The view of cmd before it runs in db, for its key spec (the compact form
-- of viewSpec in shared/commands.ts). One PEXPIRETIME per key not
-- overwritten, nothing else.
local function take_view(cmd, spec, db)
  -- The common cases first: one key, overwritten (SET k v) or not.
  if spec == '1w' then return FIRST_KEY_ANY end
  if spec == '1' then return { 2, rcall('PEXPIRETIME', cmd[2]) } end
  local first, last, step, flag = spec_range(spec, #cmd - 1, cmd)
  local view = {}
  for a = first, last, step do
    local pos, at = a + 1, ANY
    if not (flag == 'w' or (flag == 'f' and a == first) or (flag == 'l' and a == last)) then
      local in_db = key_db(cmd, pos, db)
      if in_db ~= db then
        -- pcall: a db that does not exist fails the COPY itself, which then
        -- logs nothing; an error raised here would leave the writes before
        -- it in this call unlogged.
        local selected = redis.pcall('SELECT', in_db)
        if not (type(selected) == 'table' and selected.err) then
          at = rcall('PEXPIRETIME', cmd[pos])
          rcall('SELECT', db)
        end
      else
        at = rcall('PEXPIRETIME', cmd[pos])
      end
    end
    view[#view + 1] = pos
    view[#view + 1] = at
  end
  if flag == 'p' then return popped_view(view) end
  return view
end

-- The view of a further command a rule logged for the same write on the
-- same key (members popped in chunks): its state follows from the first.
local function same_key_view()
  return FIRST_KEY_ANY
end
