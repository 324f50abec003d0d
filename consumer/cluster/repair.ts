/**
 * `qsync repair` with a Redis Cluster source: under the mark-dirty policy
 * each hash slot's queue records its own dirty keys (the slot's dirty set),
 * so each slot with something to repair (a queue state in its meta, or a
 * repair set left by a repair that stopped) is repaired on its own by the
 * standalone repair (consumer/copy/repair.ts) under the slot's lease. The
 * slots to repair are found with one pipeline per source master; the others
 * cost nothing more.
 */
import { slotKeys } from '../../shared/cluster.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE } from '../../shared/keys.js';
import { repairFailure, repairWith, type RepairResult } from '../copy/repair.js';
import type { RunContext } from '../copy/run.js';
import { failingAs, pipelined, refuseLiveConsumer, runSlots, type ClusterCopyOptions, type ClusterCopyResult, type Command } from './copy.js';
import type { Shard } from './shard-map.js';

export interface ClusterRepairResult extends ClusterCopyResult {
  /** false when no slot had dirty keys: nothing was done */
  repaired: boolean;
  /** keys in the slots' repair sets */
  dirtyKeys: number;
  /** writes went unqueued again in some slot during the repair: run it again */
  dirtyAgain: boolean;
}

/** Repairs every hash slot of a cluster source whose writes went unqueued; the slots' figures summed. */
export function repairCluster(o: ClusterCopyOptions): Promise<ClusterRepairResult> {
  return failingAs('repair', repairFailure, () => repairSlots(o));
}

async function repairSlots(o: ClusterCopyOptions): Promise<ClusterRepairResult> {
  await refuseLiveConsumer(o, 'repair', repairFailure);
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  const queue = o.queue ?? DEFAULT_QUEUE;
  const slots = new Map<Shard, number[]>();
  // Keys to copy, for the progress: the dirty sets' (a repair set left by a repair that stopped adds to it).
  let total = 0;
  await Promise.all(
    o.source.shards.map(async (shard) => {
      const reads: Command[] = shard.slots.flatMap((slot): Command[] => {
        const keys = slotKeys(prefix, queue, slot, o.name);
        return [
          ['HGET', keys.meta, 'state'],
          ['EXISTS', keys.repairing],
          ['SCARD', keys.dirty],
        ];
      });
      const replies = await pipelined(shard.client, reads);
      const mine = shard.slots.filter((_slot, i) => replies[3 * i] !== null || Number(replies[3 * i + 1]) === 1);
      for (const [i] of shard.slots.entries()) total += Number(replies[3 * i + 2]);
      slots.set(shard, mine);
    }),
  );
  const found = [...slots.values()].reduce((n, list) => n + list.length, 0);
  let dirtyKeys = 0;
  let dirtyAgain = false;
  let repaired = false;
  o.logger?.info({ slots: found }, found ? 'repair: repairing the hash slots with dirty keys' : 'repair: no dirty keys; nothing to do');
  const result = await runSlots(o, 'repair', repairFailure, slots, total, async (ctx, options) => {
    await startFromHead(ctx);
    const done: RepairResult = await repairWith(ctx, options);
    dirtyKeys += done.dirtyKeys;
    dirtyAgain ||= done.dirtyAgain;
    repaired ||= done.repaired;
    return done;
  });
  return { ...result, repaired, dirtyKeys, dirtyAgain };
}

/**
 * A slot whose log began after the target was synchronised has no watermark
 * there: the cluster consumer applies its log from the first entry, so while
 * the log still holds that entry (nothing trimmed), its watermark is 0.
 */
async function startFromHead(ctx: RunContext): Promise<void> {
  const { master, replica, keys } = ctx;
  if ((await replica.hexists(keys.applied, 'seq')) === 1) return;
  if (Number((await master.hget(keys.meta, 'trimmed')) ?? 0) === 0) await replica.hset(keys.applied, 'seq', 0);
}
