/**
 * What `qsync status` shows for a queue on a Redis Cluster: one queue per
 * hash slot, summed per source shard and in total. Each shard's slots are
 * read with one pipeline on that shard (LLEN of every slot's log, its
 * sequence, its dead letters), never with KEYS or SCAN; the shard leases and
 * states come from the queue's cluster-wide keys, as the consumers holding
 * the shards write them; with --replica, each slot's watermark on the target
 * says how far behind the replica is.
 */
import type { Redis } from 'ioredis';
import { clusterQueueKey, slotKeys, slotOf } from '../../shared/cluster.js';
import { DEFAULT_NAME, type QueueKeys } from '../../shared/keys.js';
import { age } from '../queue/status.js';
import { readNumbers, slotWatermarks, type ClusterSide, type Read, type Shard } from './shard-map.js';

/** A slot the consumer reports in trouble (halted, resync-needed...). */
export interface SlotTrouble {
  slot: number;
  state: string;
  reason: string | null;
}

export interface ShardQueueStatus {
  /** the source master's node ID: the field of its lease and status */
  node: string;
  address: string;
  slots: number;
  /** slots whose log holds entries */
  busySlots: number;
  depth: number;
  deadLetters: number;
  /** the slots that hold dead letters (`qsync dlq list --slot N`) */
  deadLetterSlots: number[];
  /** entries the replica has not applied, summed over the slots; null without --replica */
  lagEntries: number | null;
  /** the most entries one slot is behind; null without --replica */
  maxSlotLagEntries: number | null;
  /** the shard lease: who holds it and for how long still; null when no live consumer holds it */
  lease: { consumer: string; expiresInMs: number } | null;
  /** the lease holder's state, 'starting' until it reports, 'no-consumer' without a live lease */
  state: string;
  stateSinceMs: number | null;
  /** entries applied since the holder started, as it reports */
  applied: number | null;
  /** the node the holder reads from, as it reports */
  consumerNode: string | null;
  troubleSlots: SlotTrouble[];
}

export interface ClusterQueueStatus {
  queue: string;
  replica: string;
  cluster: true;
  /** the worst state among the shards and their slots */
  state: string;
  slots: number;
  busySlots: number;
  depth: number;
  deadLetters: number;
  lagEntries: number | null;
  /** consumers whose heartbeat has not run out */
  consumers: { id: string; expiresInMs: number }[];
  shards: ShardQueueStatus[];
}

/** States from the worst down, as `qsync status` ranks them for its exit code; the rest are fine. */
const WORST_FIRST = ['halted', 'resync-needed', 'replica-promoted', 'repair-needed', 'no-consumer', 'backing-off', 'starting'];

function worst(states: string[]): string {
  return WORST_FIRST.find((s) => states.includes(s)) ?? states[0] ?? 'no-consumer';
}

/** Every state a cluster status holds: the shards' and their troubled slots'. */
export function clusterStates(row: ClusterQueueStatus): string[] {
  return row.shards.flatMap((s) => [s.state, ...s.troubleSlots.map((t) => t.state)]);
}

interface ShardReport {
  state?: string;
  consumer?: string;
  node?: string;
  applied?: number;
  since?: number;
  detail?: { slots?: Record<string, { state?: string; reason?: string }> };
}

function parseReport(text: string | undefined): ShardReport {
  try {
    const value: unknown = text ? JSON.parse(text) : {};
    return value && typeof value === 'object' ? (value as ShardReport) : {};
  } catch {
    return {};
  }
}

/**
 * Every slot's depth and dead letters on the shard that owns it, and its
 * sequence when `withSeq` (for the lag: a third of the reads), in one
 * pipeline.
 */
async function readSlots(
  source: ClusterSide,
  shard: Shard,
  keysOf: (slot: number) => QueueKeys,
  withSeq: boolean,
): Promise<{ depth: number; seq: number; dlq: number }[]> {
  const reads = shard.slots.flatMap((slot): Read[] => {
    const keys = keysOf(slot);
    return withSeq
      ? [
          ['LLEN', keys.log],
          ['LLEN', keys.dlq],
          ['HGET', keys.meta, 'seq'],
        ]
      : [
          ['LLEN', keys.log],
          ['LLEN', keys.dlq],
        ];
  });
  const replies = await readNumbers(shard.client, reads, source);
  const width = withSeq ? 3 : 2;
  return shard.slots.map((_s, i) => ({ depth: replies[width * i], dlq: replies[width * i + 1], seq: withSeq ? replies[width * i + 2] : 0 }));
}

/** A cluster queue's status, read from every source master (and each slot's watermark from `target`, when given). */
export async function readClusterStatus(
  source: ClusterSide,
  prefix: string,
  queue: string,
  name = DEFAULT_NAME,
  target?: Redis | ClusterSide,
): Promise<ClusterQueueStatus> {
  const home = source.ownerOf(slotOf(clusterQueueKey(prefix, queue, 'shards', name)));
  if (!home) throw new Error(`no master of the source cluster serves the slot of ${clusterQueueKey(prefix, queue, 'shards', name)}`);
  const [[, leases], [, reports], [, consumers], [, time]] = (await home.client
    .multi()
    .hgetall(clusterQueueKey(prefix, queue, 'shards', name))
    .hgetall(clusterQueueKey(prefix, queue, 'shard-status', name))
    .zrange(clusterQueueKey(prefix, queue, 'consumers', name), '0', '-1', 'WITHSCORES')
    .time()
    .exec()) as [null, unknown][] as [[null, Record<string, string>], [null, Record<string, string>], [null, string[]], [null, [string, string]]];
  const now = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);

  const shards = await Promise.all(
    source.shards.map(async (shard): Promise<ShardQueueStatus> => {
      const slots = await readSlots(source, shard, (slot) => slotKeys(prefix, queue, slot, name), target !== undefined);
      const behind = target
        ? await slotWatermarks(
            target,
            prefix,
            queue,
            name,
            shard.slots.filter((_s, i) => slots[i].seq > 0),
          )
        : undefined;
      const lags = behind ? shard.slots.map((slot, i) => Math.max(0, slots[i].seq - (behind.get(slot) ?? slots[i].seq))) : undefined;
      const [holder, expires] = (leases[shard.id] ?? '').split(' ');
      const live = holder !== '' && Number(expires) > now;
      const report = parseReport(reports[shard.id]);
      const reported = live && (report.consumer === undefined || report.consumer === holder);
      const trouble = Object.entries((reported && report.detail?.slots) || {}).map(([slot, t]) => ({
        slot: Number(slot),
        state: String(t.state ?? 'halted'),
        reason: t.reason ?? null,
      }));
      return {
        node: shard.id,
        address: shard.address,
        slots: shard.slots.length,
        busySlots: slots.filter((s) => s.depth > 0).length,
        depth: slots.reduce((a, s) => a + s.depth, 0),
        deadLetters: slots.reduce((a, s) => a + s.dlq, 0),
        deadLetterSlots: shard.slots.filter((_s, i) => slots[i].dlq > 0),
        lagEntries: lags ? lags.reduce((a, b) => a + b, 0) : null,
        maxSlotLagEntries: lags ? Math.max(0, ...lags) : null,
        lease: live ? { consumer: holder, expiresInMs: Number(expires) - now } : null,
        state: live ? (reported ? (report.state ?? 'starting') : 'starting') : 'no-consumer',
        stateSinceMs: reported && report.since ? Number(report.since) : null,
        applied: reported && report.applied !== undefined ? Number(report.applied) : null,
        consumerNode: (reported && report.node) || null,
        troubleSlots: trouble.sort((a, b) => a.slot - b.slot),
      };
    }),
  );
  const alive: { id: string; expiresInMs: number }[] = [];
  for (let i = 0; i < consumers.length; i += 2) {
    const at = Number(consumers[i + 1]);
    if (at > now) alive.push({ id: consumers[i], expiresInMs: at - now });
  }
  const sum = (pick: (s: ShardQueueStatus) => number) => shards.reduce((a, s) => a + pick(s), 0);
  const row: ClusterQueueStatus = {
    queue,
    replica: name,
    cluster: true,
    state: 'no-consumer',
    slots: sum((s) => s.slots),
    busySlots: sum((s) => s.busySlots),
    depth: sum((s) => s.depth),
    deadLetters: sum((s) => s.deadLetters),
    lagEntries: target ? sum((s) => s.lagEntries ?? 0) : null,
    consumers: alive,
    shards,
  };
  row.state = worst(clusterStates(row));
  return row;
}

function leaseText(s: ShardQueueStatus): string {
  if (!s.lease) return 'no consumer holds the shard';
  return `${s.lease.consumer}, lease ${age(s.lease.expiresInMs)} left${s.consumerNode ? `, reading ${s.consumerNode}` : ''}`;
}

/** A plain-text view for people: the totals, then each shard and its troubled slots. */
export function formatClusterStatus(rows: ClusterQueueStatus[]): string {
  return rows
    .map((q) => {
      const lines = [
        `queue ${q.queue}${q.replica === DEFAULT_NAME ? '' : `  replica ${q.replica}`}  (Redis Cluster: ${q.shards.length} shards, a log per hash slot)`,
        `  state           ${q.state}`,
        `  depth           ${q.depth} entries in ${q.busySlots} of ${q.slots} slots`,
        `  replica behind  ${q.lagEntries === null ? '- (give --replica)' : `${q.lagEntries} entries`}`,
        `  dead letters    ${q.deadLetters}`,
        `  consumers       ${q.consumers.length ? q.consumers.map((c) => c.id).join(', ') : 'none alive'}`,
      ];
      for (const s of q.shards) {
        lines.push(
          `  shard ${s.address}  (${s.node.slice(0, 12)}, ${s.slots} slots)`,
          `    state         ${s.state}${s.stateSinceMs ? ` since ${age(Math.max(0, Date.now() - s.stateSinceMs))} ago` : ''}`,
          `    consumer      ${leaseText(s)}${s.applied !== null ? `, ${s.applied} entries applied` : ''}`,
          `    depth         ${s.depth} entries in ${s.busySlots} slots${s.maxSlotLagEntries === null ? '' : `, behind ${s.lagEntries} (at most ${s.maxSlotLagEntries} in one slot)`}`,
          `    dead letters  ${s.deadLetters}${s.deadLetterSlots.length ? `  (slots ${s.deadLetterSlots.slice(0, 10).join(', ')}${s.deadLetterSlots.length > 10 ? ', ...' : ''}: qsync dlq list --slot N)` : ''}`,
          ...s.troubleSlots.map(
            (t) => `    slot ${t.slot}${' '.repeat(Math.max(1, 9 - String(t.slot).length))}${t.state}${t.reason ? `: ${t.reason}` : ''}`,
          ),
        );
      }
      return lines.join('\n');
    })
    .join('\n\n');
}
