/**
 * `qsync resync` with a Redis Cluster source, onto a cluster of any shape or
 * a standalone server: every hash slot's queue is resynced on its own by the
 * standalone copy (consumer/copy/resync.ts, its steps and exactness
 * argument unchanged) under the slot's lease, with two differences:
 *
 * - the keys copied are the slot's on the source master that owns it, all
 *   read at one instant (CLUSTER GETKEYSINSLOT) where the standalone copy
 *   SCANs: a key missed was absent at that instant, after S0, so any write
 *   that made it is in the log after S0 and has it copied again, as a key
 *   the SCAN missed has;
 * - instead of FLUSHALL, a cluster target's keys of the slot are deleted
 *   once its mark is set; a standalone target is FLUSHALLed once at the
 *   start, in one step with the marks of every slot to copy.
 *
 * A slot with no key and no log on the source, and nothing but its
 * watermark on the target, has nothing to copy: it costs a few pipelined
 * reads and its stale watermark is deleted (a slot that starts its log later
 * is applied from its first entry onto its empty target slot).
 */
import type { Redis } from 'ioredis';
import { ownKeyPrefixes, DEFAULT_PREFIX, DEFAULT_QUEUE } from '../../shared/keys.js';
import { slotKeys } from '../../shared/cluster.js';
import type { Entry } from '../../shared/entry.js';
import { CopyResync } from '../copy/resync.js';
import { resyncFailure, type LogFollower } from '../copy/log-follower.js';
import { execAll, type CopyRunOptions, type RunContext } from '../copy/run.js';
import {
  failingAs,
  pipelined,
  refuseLiveConsumer,
  runSlots,
  targetNode,
  type ClusterCopyOptions,
  type ClusterCopyResult,
  type Command,
} from './copy.js';
import type { Shard } from './shard-map.js';

/** What the plan knows of a slot to copy. */
interface SlotPlan {
  /** keys in the slot on the source when planned */
  keys: number;
  /** the target is a cluster: its keys of the slot are deleted one by one */
  clusterTarget: boolean;
}

/** Resyncs every hash slot of a cluster source onto the target; the slots' figures summed. */
export function resyncCluster(o: ClusterCopyOptions): Promise<ClusterCopyResult> {
  return failingAs('resync', resyncFailure, () => resyncSlots(o));
}

async function resyncSlots(o: ClusterCopyOptions): Promise<ClusterCopyResult> {
  await refuseLiveConsumer(o, 'resync', resyncFailure);
  const { slots, plans, empty, total } = await plan(o);
  const clusterTarget = 'shards' in o.target;
  if (!clusterTarget) {
    // One step: the target is never empty without the marks of the slots to copy.
    const multi = (o.target as Redis).multi().flushall();
    const mark = JSON.stringify({ kind: 'resync', startedAt: Date.now() });
    for (const slot of plans.keys()) multi.hset(slotKeys(prefixOf(o), queueOf(o), slot, o.name).applied, 'resyncing', mark);
    await execAll(multi);
  } else {
    await forgetWatermarks(o, empty);
  }
  o.logger?.info({ slots: plans.size, empty: empty.length, keys: total }, 'resync: copying the hash slots that hold keys or a log');
  return runSlots(o, 'resync', resyncFailure, slots, total, (ctx, options, slot) => new SlotResync(ctx, options, slot, plans.get(slot)!).byCopy());
}

const prefixOf = (o: ClusterCopyOptions) => o.prefix ?? DEFAULT_PREFIX;
const queueOf = (o: ClusterCopyOptions) => o.queue ?? DEFAULT_QUEUE;

/**
 * Reads, one pipeline per source master, each slot's sequence, key count
 * and lease (a held lease fails the run before anything changed), and for
 * the slots with neither keys nor a log, one pipeline per target node, their
 * key count and watermark there.
 */
async function plan(o: ClusterCopyOptions): Promise<{ slots: Map<Shard, number[]>; plans: Map<number, SlotPlan>; empty: number[]; total: number }> {
  const slots = new Map<Shard, number[]>();
  const plans = new Map<number, SlotPlan>();
  const candidates: number[] = [];
  const clusterTarget = 'shards' in o.target;
  let total = 0;
  await Promise.all(
    o.source.shards.map(async (shard) => {
      const reads: Command[] = [['DBSIZE']];
      for (const slot of shard.slots) {
        const keys = slotKeys(prefixOf(o), queueOf(o), slot, o.name);
        // The sequence before the count: a write between them shows in the count.
        reads.push(['HGET', keys.meta, 'seq'], ['CLUSTER', 'COUNTKEYSINSLOT', slot], ['EXISTS', keys.lease]);
      }
      const replies = await pipelined(shard.client, reads);
      total += Number(replies[0]);
      const mine: number[] = [];
      for (const [i, slot] of shard.slots.entries()) {
        const [seq, count, leased] = replies.slice(1 + 3 * i, 4 + 3 * i);
        if (Number(leased) === 1)
          throw resyncFailure(`a consumer holds the lease of hash slot ${slot} of queue '${queueOf(o)}'; stop it first; nothing changed`);
        if (seq === null && Number(count) === 0) candidates.push(slot);
        else {
          mine.push(slot);
          plans.set(slot, { keys: Number(count), clusterTarget });
        }
      }
      slots.set(shard, mine);
    }),
  );
  const empty: number[] = [];
  for (const [node, group] of byTargetNode(o, candidates)) {
    const reads: Command[] = group.flatMap((slot) => [
      ['CLUSTER', 'COUNTKEYSINSLOT', slot],
      ['EXISTS', slotKeys(prefixOf(o), queueOf(o), slot, o.name).applied],
    ]);
    const replies = (await pipelined(node, clusterTarget ? reads : [])).map(Number);
    for (const [i, slot] of group.entries()) {
      // Anything on the target but the slot's watermark is copied over (deleted) as a slot with keys is.
      if (!clusterTarget || replies[2 * i] === replies[2 * i + 1]) empty.push(slot);
      else {
        plans.set(slot, { keys: 0, clusterTarget });
        const owner = o.source.ownerOf(slot)!;
        slots.get(owner)!.push(slot);
      }
    }
  }
  return { slots, plans, empty, total };
}

/** Slots grouped by the target server that holds them. */
function byTargetNode(o: ClusterCopyOptions, slots: number[]): Map<Redis, number[]> {
  const groups = new Map<Redis, number[]>();
  for (const slot of slots) {
    const node = targetNode(o.target, slot, resyncFailure);
    groups.set(node, [...(groups.get(node) ?? []), slot]);
  }
  return groups;
}

/** Deletes the watermarks a cluster target holds for slots with nothing to copy: their log, if one starts, is applied from its first entry. */
async function forgetWatermarks(o: ClusterCopyOptions, empty: number[]): Promise<void> {
  for (const [node, group] of byTargetNode(o, empty))
    await pipelined(
      node,
      group.map((slot) => ['DEL', slotKeys(prefixOf(o), queueOf(o), slot, o.name).applied]),
    );
}

/** Every key of a slot at one instant: GETKEYSINSLOT asked for more keys than it returns (asked again for more until it does). */
async function keysInSlot(client: Redis, slot: number, expected: number): Promise<Buffer[]> {
  for (let count = expected + 100; ; count *= 2) {
    const keys = (await client.callBuffer('CLUSTER', 'GETKEYSINSLOT', slot, count)) as Buffer[];
    if (keys.length < count) return keys;
  }
}

/** Deletions sent to the target per call. */
const DELETE_BATCH = 1000;

/** One hash slot's queue resynced by the standalone copy, its keys found and cleared by slot. */
class SlotResync extends CopyResync {
  constructor(
    ctx: RunContext,
    options: CopyRunOptions,
    private readonly slot: number,
    private readonly plan: SlotPlan,
  ) {
    super(ctx, options, 'resync', resyncFailure);
  }

  /** The mark first, then the slot's keys deleted: a slot is never emptied without its mark. */
  protected override async clearReplica(mark: string): Promise<void> {
    const { applied } = this.keys;
    await execAll(this.replica.multi().del(applied).hset(applied, 'resyncing', mark));
    // A standalone target was FLUSHALLed at the start.
    if (!this.plan.clusterTarget) return;
    const stale = (await keysInSlot(this.replica, this.slot, 0)).filter((k) => k.toString('latin1') !== applied);
    for (let i = 0; i < stale.length; i += DELETE_BATCH) await this.replica.unlink(...stale.slice(i, i + DELETE_BATCH));
  }

  /**
   * The slot's keys at one instant after S0, copied a batch at a time:
   * a key created after that instant was created after S0, so the entry that
   * wrote it is read and copies it again.
   */
  protected override async copyEveryKey(follower: LogFollower, touch: (e: Entry) => void): Promise<void> {
    const own = ownKeyPrefixes(this.options.prefix ?? DEFAULT_PREFIX);
    const found = (await keysInSlot(this.master, this.slot, this.plan.keys)).filter((k) => !own.some((o) => k.toString('latin1').startsWith(o)));
    for (let i = 0; i < found.length; i += this.scanCount) {
      this.checkLease();
      await this.copyFound(0, found.slice(i, i + this.scanCount), follower, touch);
    }
  }
}
