/**
 * What qsync's scripts answer when something stands in the way, named once.
 * Every script that can meet one of these conditions returns the same
 * number for it (as the first element of its reply), and no number means
 * two things. The Lua side reads the same names: a script that starts with
 * `--- @include "reply-codes"` gets one local per code (`GAP`, `LEASE_LOST`...),
 * written from this enum by shared/scripts.ts.
 */
export enum ReplyCode {
  ok = 0,
  /** apply: the entry read follows the watermark with entries missing in between */
  gap = -1,
  /** apply, dead-letter retry, held-key restore: the replica follows another log (the master's sequence started over) */
  otherLog = -2,
  /** apply under 'halt', dead-letter retry: bytes in the log that are not a qsync entry */
  notAnEntry = -3,
  /** apply, dead-letter retry, resync replay: the replica refused a command */
  refused = -4,
  /** apply: the entry does not follow the entry the replica applied last (the master reused lost sequence numbers) */
  brokenChain = -5,
  /** apply, held-key restore: a resync or repair owns the replica, or did not finish */
  resyncing = -6,
  /** trim, park: this consumer's lease token no longer holds the lease */
  leaseLost = -7,
  /** trim, park: the head of the log is not what this consumer applied */
  headChanged = -8,
  /** repair start: no dirty keys and no repair set */
  nothingToRepair = -9,
  /** repair start: more keys than maxDirty went unqueued; only a resync can help */
  tooManyDirty = -10,
  /** repair start: the log is still at its cap, so a repair would only fill the dirty set again */
  logAtCap = -11,
  /** resync replay: a key the master had when the command ran is gone from the replica (it expired there first); copy it again */
  keyLost = -12,
  /** apply, promote: the replica was promoted to master of the queue (qsync failover, qsync promote); it follows no other master's log */
  promoted = -13,
  /** promote: the server holds no watermark of the queue: it is not a replica of it */
  notAReplica = -14,
  /** read, trim, park, attach: this replica was detached from the log (qsync replicas detach, or the cap's policy detach-slowest) */
  detached = -20,
}

/** The Lua locals for the codes: `local GAP = -1` and so on, one line each. */
export function replyCodesLua(): string {
  return Object.entries(ReplyCode)
    .filter(([, v]) => typeof v === 'number')
    .map(([name, v]) => `local ${name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()} = ${v}`)
    .join('\n');
}
