--[[
  Keys the replica holds back from the stream, kept in the applied hash
  (KEYS[1], in the queue db) in the same step as the watermark:
    'held:<db>:<key>'  'p<seq>': pending, waiting for a copy from the master;
                       seq is the last entry held back because of it
                       'm<seq>': copied from the master as it was after
                       entry seq (its marker)
    'held'             the highest marker given so far; the field exists
                       while any key is held, so that a replica with none
                       pays nothing per command (read with the watermark)
    'heldPending'      how many keys are pending
  The rule (the same as the resync's replay): a command touching a pending
  key is not run, and its other keys become pending too (their state now
  depends on it); a command whose keys all have a marker at or after its
  entry is in their copies and is not run; one mixing such keys and others
  makes the others pending. Markers at or below the watermark mean nothing
  any more: once no key is pending and the watermark passed every marker,
  the fields are dropped. A copy (restore-held-1.lua) turns pending keys
  into marked ones.
]]

-- The field of a key of db.
local function held_id(db, key)
  return 'held:' .. db .. ':' .. key
end

-- Splits a field's value into its kind ('p' or 'm') and its seq.
local function held_parse(v)
  if not v then return nil, 0 end
  return string.sub(v, 1, 1), tonumber(string.sub(v, 2))
end
