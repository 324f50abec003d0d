/**
 * Repair: after writes went unqueued under the `mark-dirty` policy (their
 * keys recorded in the dirty set), copies only those keys to the replica
 * while writers go on, and hands the replica back to the consumer.
 *
 * 1. Under the consumer lease (nothing is applied or trimmed meanwhile), the
 *    replica is marked `resyncing` (kind repair), left as it is otherwise:
 *    its watermark W says which entries it holds for every other key.
 * 2. On the master, in one step (shared/lua/repair-start-4.lua): the dirty
 *    set becomes the repair set and the queue's state is removed, so that
 *    every write from there on is queued again, after entry S0.
 * 3. Every key of the repair set is copied as it was after some entry c >= S0,
 *    its marker: every write to it up to c, queued or not, is in the copy.
 * 4. The log after W is replayed with the marker rule (copy/run.ts):
 *    entries for a repaired key up to its copy are skipped, the rest applied,
 *    and the watermark handed back with the mark removed, in one step. The
 *    repair set goes last: a repair that stops anywhere before leaves it and
 *    the mark, and running it again takes it up.
 */
import { ExitCode, QsyncError } from '../../shared/errors.js';
import { ReplyCode } from '../../shared/reply-codes.js';
import { CopyRun, withRunContext, type CopyProgress, type CopyRunOptions, type CopyRunResult, type RunContext } from './run.js';
import { ResyncError, type Fail } from './log-follower.js';
import { keyId } from '../../shared/entry-keys.js';
import { markKind } from '../drain/mark.js';
import { describeDivergence, lostEntries, rewindDiverged } from '../drain/divergence.js';

/** The repair cannot go on; the replica stays marked and the repair set stays on the master: run it again. */
export class RepairError extends QsyncError {
  override readonly exitCode = ExitCode.repairNeeded;
}

export const repairFailure: Fail = (detail) => new RepairError(`qsync: repair: ${detail}`);
/** Only a resync can bring the replica back. */
const needsResync = (detail: string) => new ResyncError(`qsync: repair: ${detail}; rebuild the replica with qsync resync`);

export type RepairProgress = CopyProgress;
export type RepairOptions = CopyRunOptions;

export interface RepairResult extends CopyRunResult {
  /** false when there was nothing to repair (no dirty keys): nothing was done */
  repaired: boolean;
  /** keys in the repair set */
  dirtyKeys: number;
  /** writes went unqueued again during the repair: run it again */
  dirtyAgain: boolean;
  /** the entries the replica had applied and the master lost (drain/divergence.ts), when the repair was for those */
  lost?: { from: number; to: number; keys: number };
}

/** Copies the dirty keys to the replica and leaves it ready for the consumer. */
export function runRepair(options: RepairOptions): Promise<RepairResult> {
  return withRunContext(options, 'repair', repairFailure, (ctx) => repairWith(ctx, options));
}

/** The repair on connections and a lease the caller holds (a Redis Cluster's hash slot: consumer/cluster/copy.ts). */
export function repairWith(ctx: RunContext, options: RepairOptions): Promise<RepairResult> {
  return new Repair(ctx, options, 'repair', repairFailure).run();
}

class Repair extends CopyRun {
  async run(): Promise<RepairResult> {
    const { master, replica, keys } = this;
    // A master that lost writes the replica applied: their keys join the repair set, the watermark goes back.
    const diverged = await rewindDiverged(master, replica, keys);
    if (diverged && !diverged.keys) {
      throw needsResync(`the master lost writes the replica applied: ${lostEntries(diverged)} on the replica only, and ${diverged.unknown}`);
    }
    const lost =
      diverged?.keys && diverged.sharedUpTo !== null
        ? { from: diverged.sharedUpTo + 1, to: diverged.replicaAt, keys: diverged.keys.length }
        : undefined;
    if (lost) this.log.warn(describeDivergence(diverged!), 'repair: the master lost writes the replica applied; copying their keys');
    const [[state, masterEpoch], pending] = await Promise.all([master.hmget(keys.meta, 'state', 'epoch'), master.exists(keys.repairing)]);
    if (!state && !pending) return this.nothing();
    if (state === 'resync-needed') throw needsResync('more keys went unqueued than the queue records (--max-dirty)');
    const [seq, epoch, ts, part, mark] = await replica.hmget(keys.applied, 'seq', 'epoch', 'ts', 'part', 'resyncing');
    if (mark && markKind(mark) !== 'repair') throw needsResync(`a resync of the replica did not finish (${mark})`);
    if (seq === null) throw needsResync('the replica has never been synchronised');
    if (epoch && masterEpoch && epoch !== masterEpoch)
      throw needsResync(`the replica follows another log (epoch ${epoch}, the master's is ${masterEpoch})`);
    const w = Number(seq);

    // The mark first: a replica whose dirty keys are stale is never left unmarked.
    if (!mark) await replica.hset(keys.applied, 'resyncing', JSON.stringify({ kind: 'repair', from: w, startedAt: Date.now() }));
    const [code, s0, , startEpoch, total] = (await master.qsyncRepairStart(keys.meta, keys.dirty, keys.repairing, keys.log)) as [
      number,
      string,
      string,
      string,
      number,
    ];
    if (code !== ReplyCode.ok) {
      if (code === ReplyCode.tooManyDirty) throw needsResync('more keys went unqueued than the queue records (--max-dirty)');
      if (!mark) await replica.hdel(keys.applied, 'resyncing');
      if (code === ReplyCode.nothingToRepair) return this.nothing();
      throw this.fail(`the log is still at its cap (${s0}); let the consumer drain it or raise the cap (qsync limit), then run the repair again`);
    }
    await master.hset(keys.status, 'state', 'repairing', 'stateSince', Date.now(), 'detail', JSON.stringify({ from: w, keys: total }));
    this.log.info({ from: w, queuedFrom: Number(s0), keys: total }, 'repair: copying the dirty keys');
    this.copier.start(Number(s0), startEpoch);
    this.progress.total = total;
    await this.copyRepairSet();

    const [partSeq, partDone] = (part ?? '').split(':').map(Number);
    const result = await this.finish(w, Number(ts ?? 0), part ? { seq: partSeq, done: partDone } : undefined);
    await master.del(keys.repairing);
    const dirtyAgain = (await master.hget(keys.meta, 'state')) !== null;
    if (dirtyAgain) this.log.warn('repair: the queue filled again during the repair and more writes went unqueued; run the repair again');
    return { ...result, repaired: true, dirtyKeys: total, dirtyAgain, ...(lost ? { lost } : {}) };
  }

  /** Copies every key of the repair set (members `<db>:<key>`), a batch at a time. */
  private async copyRepairSet(): Promise<void> {
    let cursor = '0';
    do {
      this.checkLease();
      const [next, members] = await this.master.sscanBuffer(this.keys.repairing, cursor, 'COUNT', this.scanCount);
      cursor = next.toString();
      const ids = members.map((m) => {
        const colon = m.indexOf(':');
        return keyId(Number(m.subarray(0, colon).toString()), m.subarray(colon + 1));
      });
      if (ids.length) await this.copyIds(ids);
    } while (cursor !== '0');
  }

  private nothing(): RepairResult {
    this.log.info('repair: no dirty keys; nothing to do');
    return {
      seq: 0,
      copied: 0,
      replayed: 0,
      skipped: 0,
      recopies: 0,
      seconds: (Date.now() - this.started) / 1000,
      repaired: false,
      dirtyKeys: 0,
      dirtyAgain: false,
    };
  }
}
