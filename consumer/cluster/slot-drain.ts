/**
 * One hash slot's queue, drained a batch at a time by the worker of the
 * source shard that owns the slot now. A slot's queue is a standalone
 * queue under the slot's keys (shared/cluster.ts slotKeys), so this runs the
 * same scripts and the same checks as SyncWorker (drain/checks.ts): the
 * slot's lease for its trims, its watermark on the target (in the same slot,
 * so that a cluster target applies the batch and moves the watermark on one
 * node, atomically), the gap, lost-writes and promoted checks, dead letters.
 */
import { Cluster, type Redis } from 'ioredis';
import { decodeEntry } from '../../shared/entry.js';
import { entryKeys } from '../../shared/entry-keys.js';
import type { QueueKeys } from '../../shared/keys.js';
import type { Logger } from '../../shared/logger.js';
import { ReplyCode } from '../../shared/reply-codes.js';
import { Batch } from '../drain/batch.js';
import { APPLIED_FIELDS, appliedAtStart, applyFailure, checkLastApplied, checkMaster, ResyncNeeded, type LastApplied } from '../drain/checks.js';
import { Confirmer, haltDetail, type ApplyReply, type OnError } from '../drain/confirm.js';
import { onSide, SideError } from '../drain/connections.js';
import { Detached, describeDetached, detachedReason } from '../drain/detached.js';
import { HeldCopyRefused, HeldKeys } from '../drain/held-keys.js';
import { Lease } from '../drain/lease.js';
import { isTopologyError } from './topology.js';

/** The slot's lease is held by another consumer for this many more ms. */
export class SlotLeased extends Error {
  constructor(readonly waitMs: number) {
    super(`another consumer holds the slot's lease for ${waitMs} ms more`);
  }
}

/** The replica refused an entry, or the log holds bytes that are not one (under --on-error halt): the slot waits. */
export class SlotHalted extends Error {
  constructor(readonly detail: Record<string, unknown>) {
    super(String(detail.reason));
  }
}

/** The batch met a slot that is moving (target or source): it goes again once the topology settles. */
export class SlotMoving extends Error {}

export interface SlotDrainOptions {
  batchSize: number;
  batchBytes: number;
  onError: OnError;
  leaseMs: number;
  /** the lease token: the consumer's id */
  token: string;
  log: Logger;
}

/** A batch the target applied: entries applied (those skipped, at or below the watermark, left out), the watermark after it, the apply's time. */
export interface Applied {
  count: number;
  watermark: number;
  seconds: number;
}

export class SlotDrain {
  private readonly lease: Lease;
  private readonly confirmer: Confirmer;
  private readonly held: HeldKeys;
  /** the replica's epoch and last entry, read when the drain of this slot (re)starts */
  private started?: { epoch: string | null; last: LastApplied };
  private watermark = 0;
  private gapSeenAt = -1;
  /** when the slot's lease is renewed next */
  private renewAt = 0;

  constructor(
    readonly slot: number,
    readonly keys: QueueKeys,
    private readonly master: Redis,
    private readonly target: Redis | Cluster,
    private readonly opts: SlotDrainOptions,
  ) {
    this.lease = new Lease(master, keys, opts.token, opts.leaseMs);
    this.confirmer = new Confirmer(master, target, keys, opts.token, opts.log);
    this.held = new HeldKeys(master, target, keys, 0);
  }

  /** Starts over at the next step (after any failure): the lease taken again, then from the replica's watermark. */
  restart(): void {
    this.started = undefined;
    this.renewAt = 0;
  }

  /** Releases the slot's lease, if held. */
  async release(): Promise<void> {
    if (this.lease.valid()) await this.lease.release();
  }

  /**
   * Reads, applies and confirms one batch of the slot's log; true when the
   * log holds more. `onApplied` hears of the batch as soon as the target
   * applied it, before its trim on the source.
   */
  async step(onApplied: (applied: Applied) => void): Promise<boolean> {
    // Renewed once a third of it has gone, as SyncWorker renews its own: a
    // batch started near the end of the lease would find it gone at its trim.
    if (!this.lease.valid() || Date.now() >= this.renewAt) {
      const wait = await onSide('master', this.lease.acquire());
      if (wait > 0) throw new SlotLeased(wait);
      this.renewAt = Date.now() + this.opts.leaseMs / 3;
    }
    this.started ??= await this.start();
    const { epoch, last } = this.started;
    const { keys, opts } = this;
    const reply = await onSide(
      'master',
      this.master.qsyncReadBatchBuffer(keys.log, keys.meta, 0, opts.batchSize, opts.batchBytes, 1, keys.name, 'joined'),
    );
    const [batchEpoch, seq, remaining, , lengths, joined] = reply;
    if (Number(remaining) < 0) throw new ResyncNeeded(await onSide('master', detachedReason(this.master, keys)));
    const batch = new Batch(batchEpoch.toString(), seq.length ? Number(seq.toString()) : null, Number(remaining), lengths, joined);
    checkMaster(batch, this.watermark, epoch);
    checkLastApplied(batch, last);
    if (batch.count === 0) return false;
    const sent = process.hrtime.bigint();
    const lead = [keys.applied, batch.epoch, '0', opts.onError];
    const applied = (await onSide('replica', batch.applyOn(this.target, lead, this.declared(batch)))) as ApplyReply;
    const seconds = Number(process.hrtime.bigint() - sent) / 1e9;
    if (applied[0] !== ReplyCode.ok) return this.failed(batch, applied);
    onApplied({ count: Number(applied[2]), watermark: Number(applied[1]), seconds });
    await this.confirmer.confirm(batch, applied).catch((err: Error) => {
      throw err instanceof Detached ? new ResyncNeeded(err.message) : err;
    });
    this.watermark = Number(applied[1]);
    if (Number(applied[4] ?? 0) > 0) await this.copyHeld(batch.epoch);
    return batch.remaining > 0;
  }

  /**
   * On a cluster target, every key the batch writes, declared to the apply
   * script besides the watermark's: the node checks them all before the
   * script runs, so that while the slot moves between target nodes the batch
   * is redirected (ASK) or waits (TRYAGAIN) instead of running where some of
   * its keys are not. Bytes that are not an entry declare nothing (they are
   * refused or parked as ever).
   */
  private declared(batch: Batch): Buffer[] {
    if (!(this.target instanceof Cluster)) return [];
    const keys = new Map<string, Buffer>();
    for (const raw of batch.entries) {
      let found: Buffer[];
      try {
        found = entryKeys(decodeEntry(raw)).map((k) => k.key);
      } catch {
        continue;
      }
      for (const key of found) keys.set(key.toString('latin1'), key);
    }
    return [...keys.values()];
  }

  /** The replica's watermark and state before the first batch; attaches to the log. */
  private async start(): Promise<{ epoch: string | null; last: LastApplied }> {
    const at = appliedAtStart(await onSide('replica', this.target.hmget(this.keys.applied, ...APPLIED_FIELDS)));
    this.watermark = at.seq;
    const { keys } = this;
    const [code, why] = await onSide('master', this.master.qsyncAttach(keys.meta, keys.log, keys.name, 'head', this.watermark));
    if (code === ReplyCode.detached) throw new ResyncNeeded(describeDetached(why, keys.name));
    if (at.epoch && at.heldPending > 0) await this.copyHeld(at.epoch);
    return { epoch: at.epoch, last: { seq: at.seq, ts: at.ts, checked: false } };
  }

  /** An apply that did not succeed: a gap to read again, a slot that moved, or a halt; throws the rest. */
  private failed(batch: Batch, reply: ApplyReply): boolean {
    const failure = applyFailure(reply, this.gapSeenAt);
    if (failure === 'halted') {
      // A refusal because the slot is moving on the target is no refusal of the entry.
      if (reply[0] === ReplyCode.refused && isTopologyError(String(reply[4]))) throw new SlotMoving(String(reply[4]));
      throw new SlotHalted(haltDetail(reply, batch.entries, this.keys.log));
    }
    this.gapSeenAt = failure.gapAt;
    this.watermark = failure.gapAt;
    return true;
  }

  private async copyHeld(epoch: string): Promise<void> {
    try {
      const { copied, pending } = await this.held.copy(epoch);
      this.opts.log.info({ slot: this.slot, copied, pending }, 'copied from the master keys that had expired on the replica first');
    } catch (err) {
      if (err instanceof HeldCopyRefused) throw new ResyncNeeded(err.message);
      throw err instanceof SideError ? err : new SideError('replica', err as Error);
    }
  }
}
