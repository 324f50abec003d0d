/**
 * `qsync limit` on a Redis Cluster. The queue is one per hash slot, and so is
 * the cap: each slot's queue holds at most the entries and bytes given, as
 * the log-write script enforces in that slot atomically; nothing caps the
 * cluster as a whole. A change is made in every slot's meta hash, one
 * pipeline per master, following a slot that moves meanwhile (MOVED, ASK);
 * the usage is read with one pipeline per master too.
 */
import { createHash } from 'node:crypto';
import { slotKeys, SLOTS } from '../../shared/cluster.js';
import type { QueueKeys } from '../../shared/keys.js';
import { scripts } from '../../shared/scripts.js';
import {
  capText,
  changesLimits,
  POLICY_TEXT,
  setLimitsArgs,
  sizeText,
  usageFrom,
  USAGE_FIELDS,
  type LimitChange,
  type Limits,
  type QueueUsage,
} from '../queue/limits.js';
import { sendFollowing, type ClusterSide, type Read, type Shard } from './shard-map.js';

/** A source master's part of the queue: its slots' usage summed. */
export interface ShardUsage {
  /** the master's node ID */
  node: string;
  address: string;
  slots: number;
  /** entries queued in its slots' logs */
  depth: number;
  /** bytes of those entries, as packed */
  queuedBytes: number;
  /** slots whose queue is at or over its cap */
  fullSlots: number;
  repairNeededSlots: number;
  resyncNeededSlots: number;
  /** keys recorded in its slots' dirty sets */
  dirtyKeys: number;
  /** the slots in repair-needed or resync-needed, ascending */
  troubleSlots: number[];
}

/** A cap and the slots whose queue has it. */
export interface CapGroup {
  limits: Limits;
  slots: number[];
}

export interface ClusterUsage {
  queue: string;
  /** every cap the slots have, the most common first: one group when all slots have the same */
  caps: CapGroup[];
  shards: ShardUsage[];
  /** slots no master serves: neither read nor changed */
  unserved: number[];
}

type SlotUsage = QueueUsage & { depth: number };

/**
 * Every slot's usage on the master that owns it, in one pipeline: three reads
 * per slot, as usageFrom takes them. (One script call per master reading
 * them all costs the master twice the CPU and holds it for the whole call.)
 */
async function readShard(side: ClusterSide, shard: Shard, keysOf: (slot: number) => QueueKeys): Promise<SlotUsage[]> {
  const reads = shard.slots.flatMap((slot): Read[] => {
    const keys = keysOf(slot);
    return [
      ['LLEN', keys.log],
      ['HMGET', keys.meta, ...USAGE_FIELDS],
      ['SCARD', keys.dirty],
    ];
  });
  const replies = await sendFollowing(shard.client, reads, side);
  return shard.slots.map((_s, i) => {
    const depth = Number(replies[3 * i]);
    return { ...usageFrom(depth, replies[3 * i + 1] as (string | null)[], Number(replies[3 * i + 2])), depth };
  });
}

const capKey = (l: Limits) => `${l.maxEntries} ${l.maxBytes} ${l.policy} ${l.maxDirty}`;

/** The usage of every slot's queue, summed per master, and the caps the slots have. */
export async function readClusterUsage(side: ClusterSide, prefix: string, queue: string, name?: string): Promise<ClusterUsage> {
  const keysOf = (slot: number) => slotKeys(prefix, queue, slot, name);
  const caps = new Map<string, CapGroup>();
  const shards = await Promise.all(
    side.shards.map(async (shard): Promise<ShardUsage> => {
      const usage = await readShard(side, shard, keysOf);
      for (const [i, u] of usage.entries()) {
        const group = caps.get(capKey(u.limits)) ?? { limits: u.limits, slots: [] };
        group.slots.push(shard.slots[i]);
        caps.set(capKey(u.limits), group);
      }
      const sum = (pick: (u: SlotUsage) => number) => usage.reduce((a, u) => a + pick(u), 0);
      return {
        node: shard.id,
        address: shard.address,
        slots: shard.slots.length,
        depth: sum((u) => u.depth),
        queuedBytes: sum((u) => u.queuedBytes),
        fullSlots: usage.filter((u) => u.full).length,
        repairNeededSlots: usage.filter((u) => u.queueState === 'repair-needed').length,
        resyncNeededSlots: usage.filter((u) => u.queueState === 'resync-needed').length,
        dirtyKeys: sum((u) => u.dirtyKeys),
        troubleSlots: shard.slots.filter((_s, i) => usage[i].queueState !== 'ok'),
      };
    }),
  );
  const unserved: number[] = [];
  for (let slot = 0; slot < SLOTS; slot++) if (!side.ownerOf(slot)) unserved.push(slot);
  for (const group of caps.values()) group.slots.sort((a, b) => a - b);
  return { queue, caps: [...caps.values()].sort((a, b) => b.slots.length - a.slots.length), shards, unserved };
}

/**
 * Applies a change to every slot's queue the masters serve, each slot in one
 * step (shared/lua/set-limits.lua), one pipeline per master; a slot that
 * moves meanwhile gets it on the master that holds it now. --clear-repair
 * acts on the slots in repair-needed or resync-needed, as read first.
 */
export async function setClusterLimits(side: ClusterSide, prefix: string, queue: string, change: LimitChange, name?: string): Promise<void> {
  const lua = scripts().find((s) => s.command === 'qsyncSetLimits')!.lua;
  const sha = createHash('sha1').update(lua).digest('hex');
  // A call with no key and no change puts the script in each master's cache (EVAL), for the EVALSHAs after it.
  await Promise.all(side.shards.map((s) => s.client.call('EVAL', lua, '0', ...setLimitsArgs({}))));
  const caps = { ...change, clearRepair: false };
  const trouble = new Set(change.clearRepair ? (await readClusterUsage(side, prefix, queue, name)).shards.flatMap((s) => s.troubleSlots) : []);
  await Promise.all(
    side.shards.map((shard) => {
      const calls: Read[] = [];
      for (const slot of shard.slots) {
        const keys = slotKeys(prefix, queue, slot, name);
        if (trouble.has(slot)) calls.push(['EVALSHA', sha, '2', keys.meta, keys.dirty, ...setLimitsArgs(change)]);
        else if (changesLimits(caps)) calls.push(['EVALSHA', sha, '1', keys.meta, ...setLimitsArgs(caps)]);
      }
      return sendFollowing(shard.client, calls, side);
    }),
  );
}

/** Slots for people: "slot 12", "slots 12, 40, 9000" and how many more. */
function slotList(slots: number[], most = 10): string {
  return `${slots.length === 1 ? 'slot' : 'slots'} ${slots.slice(0, most).join(', ')}${slots.length > most ? `, ... (${slots.length - most} more)` : ''}`;
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

/** Queued entries and bytes, and the slots at their cap. */
function queuedText(u: { depth: number; queuedBytes: number; fullSlots: number }, slots: number): string {
  return `${u.depth} entries, ${sizeText(u.queuedBytes)}; ${u.fullSlots} of ${slots} slots full`;
}

/** The slots in repair-needed or resync-needed and their dirty keys, with what to do about them. */
function troubleText(u: { repairNeededSlots: number; resyncNeededSlots: number; dirtyKeys: number }): string {
  if (u.repairNeededSlots + u.resyncNeededSlots === 0) return 'ok';
  return [
    u.repairNeededSlots ? `${plural(u.repairNeededSlots, 'slot')} repair-needed` : '',
    u.resyncNeededSlots ? `${plural(u.resyncNeededSlots, 'slot')} resync-needed (too many keys to repair)` : '',
    `${u.dirtyKeys} dirty keys`,
  ]
    .filter(Boolean)
    .join(', ');
}

/** What `qsync limit` prints for a cluster: the cap per hash slot (or every cap the slots have), then the usage in total and per master. */
export function formatClusterLimits(u: ClusterUsage): string {
  const slots = u.shards.reduce((a, s) => a + s.slots, 0);
  const sum = (pick: (s: ShardUsage) => number) => u.shards.reduce((a, s) => a + pick(s), 0);
  const lines = [`queue ${u.queue}  (Redis Cluster: ${u.shards.length} shards; a queue per hash slot, each with its own cap)`];
  if (u.caps.length === 1) {
    const [{ limits: l }] = u.caps;
    lines.push(
      `  cap per slot    ${capText(l)}  (each of the ${slots} slots' queues; no cap on the cluster as a whole)`,
      `  policy          ${l.policy}: ${POLICY_TEXT[l.policy]}`,
      `  max dirty       ${l.maxDirty} keys per slot`,
    );
  } else {
    lines.push(
      `  caps differ between slots: ${u.caps.length} caps among ${slots} slots; qsync limit again with the flags wanted gives every slot the same`,
      ...u.caps.map(
        (g) =>
          `    ${plural(g.slots.length, 'slot').padEnd(12)}  ${capText(g.limits)}; max dirty ${g.limits.maxDirty}${g.slots.length <= 10 ? `  (${slotList(g.slots)})` : ''}`,
      ),
    );
  }
  const total = {
    depth: sum((s) => s.depth),
    queuedBytes: sum((s) => s.queuedBytes),
    fullSlots: sum((s) => s.fullSlots),
    repairNeededSlots: sum((s) => s.repairNeededSlots),
    resyncNeededSlots: sum((s) => s.resyncNeededSlots),
    dirtyKeys: sum((s) => s.dirtyKeys),
  };
  lines.push(`  queued          ${queuedText(total, slots)}`, `  state           ${troubleText(total)}`);
  if (u.unserved.length) lines.push(`  no master serves ${plural(u.unserved.length, 'slot')} (${slotList(u.unserved)}): not read, not changed`);
  for (const s of u.shards) {
    lines.push(
      `  shard ${s.address}  (${s.node.slice(0, 12)}, ${s.slots} slots)`,
      `    queued        ${queuedText(s, s.slots)}`,
      `    state         ${troubleText(s)}${s.troubleSlots.length ? `  (${slotList(s.troubleSlots)})` : ''}`,
    );
  }
  return lines.join('\n');
}
