--[[
  A relay (qsync consume --relay): the replica logs what it applies in its
  own queue, in the same step as the apply, so that it feeds replicas of its
  own (a chain). Each entry applied whole is appended to the replica's log
  as its producer would have written it: the same db, commands and views (the
  first master's view of each key's expiry), re-sequenced in this log, with
  this server's time.
]]
--- @include "includes/now"
--- @include "includes/entry"

-- Appends the decoded entries in list (in order) to the log, one
-- append_entries call for each run of entries in the same db. In the queue db.
local function relay_entries(meta_key, log_key, queue_db, list)
  local i = 1
  while i <= #list do
    local db = list[i][4]
    local groups, views = {}, {}
    while i <= #list and list[i][4] == db do
      groups[#groups + 1] = list[i][5]
      views[#groups] = list[i][7]
      i = i + 1
    end
    local meta = rcall('HMGET', meta_key, 'seq', 'ts', 'bytes')
    append_entries(meta_key, log_key, string.format('%d', db), queue_db, groups, views, meta[1], meta[2], meta[3])
  end
end
