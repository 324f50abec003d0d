/**
 * The checks a drain makes on one queue's log and the replica's watermark,
 * whoever drives it: a SyncWorker for a standalone queue, a cluster shard's
 * worker for each hash slot's queue (consumer/cluster/). Each turns what it
 * sees into the error that says what stands in the way.
 */
import type { Batch } from './batch.js';
import type { ApplyReply } from './confirm.js';
import { decodeEntry } from '../../shared/entry.js';
import { markKind } from './mark.js';
import { ReplyCode } from '../../shared/reply-codes.js';

/** The replica cannot be brought up to date from the queue. */
export class ResyncNeeded extends Error {}

/** The master's history parts from the replica's: it lost writes the replica applied (drain/divergence.ts). */
export class MasterLostWrites extends ResyncNeeded {}

/** The replica was promoted to master of the queue (qsync failover, qsync promote): this consumer must not touch it. */
export class ReplicaPromoted extends Error {}

/** Why a consumer of the old master stops at a promoted replica, from its applied hash's `promoted` (the new epoch). */
export function promotedReason(epoch: string): string {
  return `the replica was promoted to master of the queue (its own log, epoch ${epoch}): it follows this master no more and nothing is applied to it; stop this consumer, or rejoin this server as the new master's replica (qsync rejoin)`;
}

/** The fields of the replica's applied hash a drain starts from, in this order. */
export const APPLIED_FIELDS = ['seq', 'epoch', 'resyncing', 'heldPending', 'promoted', 'ts'] as const;

/** What the replica's applied hash says before a drain starts; throws when it must not start. */
export function appliedAtStart(fields: (string | null)[]): { seq: number; epoch: string | null; heldPending: number; ts: number | null } {
  const [seq, epoch, resyncing, heldPending, promoted, ts] = fields;
  if (promoted) throw new ReplicaPromoted(promotedReason(promoted));
  if (resyncing) {
    throw new ResyncNeeded(
      `a ${markKind(resyncing)} of the replica started (${resyncing}) and did not finish; run qsync ${markKind(resyncing)} again`,
    );
  }
  return { seq: Number(seq ?? 0), epoch, heldPending: Number(heldPending ?? 0), ts: ts === null ? null : Number(ts) };
}

/** Stops on a master that lost its log (restarted without persistence), given the replica's watermark and epoch. */
export function checkMaster(batch: Batch, watermark: number, replicaEpoch: string | null): void {
  if (watermark === 0) {
    if (batch.count === 0 && batch.masterSeq !== null && batch.masterSeq > 0) {
      throw new ResyncNeeded(
        `the replica has never been synchronised and the master's log is already at ${batch.masterSeq}; rebuild the replica from a copy of the master`,
      );
    }
    return;
  }
  if (batch.masterSeq === null) {
    throw new ResyncNeeded(
      `the master has no log sequence but the replica applied up to ${watermark}: the master lost its data (restarted without persistence?)`,
    );
  }
  if (batch.masterSeq < watermark && (!replicaEpoch || batch.epoch === replicaEpoch)) {
    throw new MasterLostWrites(
      `the master's sequence is behind the replica (master at ${batch.masterSeq}, replica at ${watermark}): the master lost writes the replica applied`,
    );
  }
  if (replicaEpoch && batch.epoch && batch.epoch !== replicaEpoch) {
    throw new ResyncNeeded(`the master's sequence started over (master at ${batch.masterSeq}, replica at ${watermark}): the master lost its data`);
  }
}

/** The entry the replica applied last, until the master's is seen to be the same one (checkLastApplied). */
export interface LastApplied {
  seq: number;
  ts: number | null;
  checked: boolean;
}

/**
 * Stops on a master whose entry at the replica's watermark is not the one
 * the replica applied (another time): it lost the replica's last entries
 * and reused their sequence numbers. The apply script skips entries at or
 * below the watermark unseen, and checks only the link of the next one: a
 * master that reused exactly as many numbers as it lost would otherwise be
 * trimmed unseen. Checked once per lead, on the batch that holds the entry.
 */
export function checkLastApplied(batch: Batch, last: LastApplied): void {
  if (last.checked || last.ts === null || batch.masterSeq === null || batch.count === 0) return;
  // The log ends at the master's sequence, `remaining` entries after this batch.
  const lastSeq = batch.masterSeq - batch.remaining;
  const firstSeq = lastSeq - batch.count + 1;
  if (lastSeq < last.seq) return;
  last.checked = true;
  if (firstSeq > last.seq) return;
  let ts: number;
  try {
    const e = decodeEntry(batch.entries[last.seq - firstSeq]);
    if (e.seq !== last.seq) return;
    ts = e.ts;
  } catch {
    return;
  }
  if (ts !== last.ts) {
    throw new MasterLostWrites(
      `the master does not follow the entry the replica applied last (${last.seq}): its entry ${last.seq} was written at ${ts}, the replica's at ${last.ts}; the master lost its last writes and reused their sequence numbers`,
    );
  }
}

/**
 * What an apply reply other than success means for the drain: a gap seen
 * for the first time (the watermark the replica is at, to read again from
 * the head), 'halted' for an entry the replica refused or bytes that are
 * not an entry; throws for the rest. A gap seen twice at the same watermark
 * (`gapSeenAt`) is entries gone for good.
 */
export function applyFailure(reply: ApplyReply, gapSeenAt: number): { gapAt: number } | 'halted' {
  const code = reply[0];
  if (code === ReplyCode.gap) {
    const [, wm, next] = reply.map(Number);
    if (gapSeenAt === wm) {
      throw new ResyncNeeded(`entries ${wm + 1} to ${next - 1} are gone from the master's log; rebuild the replica from a copy of the master`);
    }
    return { gapAt: wm };
  }
  if (code === ReplyCode.resyncing) {
    throw new ResyncNeeded('a resync or repair of the replica is under way or did not finish; run it again if none is running');
  }
  if (code === ReplyCode.brokenChain) {
    throw new MasterLostWrites(
      `entry ${reply[2]} on the master does not follow the entry the replica applied last (${reply[1]}): the master lost its last writes and reused their sequence numbers`,
    );
  }
  if (code === ReplyCode.promoted) throw new ReplicaPromoted(promotedReason(String(reply[1])));
  if (code === ReplyCode.otherLog) throw new ResyncNeeded(`the replica follows another log (epoch ${reply[1]}); the master's sequence started over`);
  return 'halted';
}
