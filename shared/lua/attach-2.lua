#!lua
--[[
  Attaches a replica to the log (includes/replicas.lua), so that the log
  keeps every entry from here on until the replica confirmed it.

  'head': its consumer starts. A replica not in the replicas hash is
  attached at the head of the log; one attached stays where it is; a
  detached one stays detached (it needs a resync).
  'tail': a resync starts. The replica is attached after the last entry,
  in the same step as the master's sequence is read: the resync copies
  what came before and replays what comes after. What no other replica
  needs leaves the log.

  Input:
    KEYS[1] meta hash
    KEYS[2] log list
    ARGV[1] the replica's name
    ARGV[2] 'head' or 'tail'
    ARGV[3] the replica's watermark

  Output:
    {OK, seq or '', epoch or '', ts or ''}   the master's sequence, epoch and time of its last entry
    {DETACHED, why}                          'head': the replica was detached ('detached:<ms>:<why>')
    (codes: shared/reply-codes.ts)
]]
local rcall = redis.call
--- @include "reply-codes"
--- @include "includes/replicas"
local meta_key, log_key, name = KEYS[1], KEYS[2], ARGV[1]
local replicas_key = replicas_key_of(meta_key)
local meta = rcall('HMGET', meta_key, 'seq', 'epoch', 'ts', 'bytes')
local cur = rcall('HGET', replicas_key, name)
local trimmed, trimmed_bytes = log_start(meta_key)
if ARGV[2] == 'tail' then
  local tail = trimmed + rcall('LLEN', log_key)
  local tail_bytes = trimmed_bytes + (tonumber(meta[4]) or 0)
  rcall('HSET', replicas_key, name, fmt(tail) .. ':' .. fmt(tail_bytes) .. ':' .. (meta[1] or '0'))
  settle_log(meta_key, log_key)
elseif not cur then
  rcall('HSET', replicas_key, name, fmt(trimmed) .. ':' .. fmt(trimmed_bytes) .. ':' .. ARGV[3])
elseif not replica_parse(cur) then
  return { DETACHED, cur }
end
return { OK, meta[1] or '', meta[2] or '', meta[3] or '' }
