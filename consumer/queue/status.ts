/**
 * What `qsync status` shows for each queue, read from the master alone:
 * depth, age of the oldest entry, sequence, the watermark the consumer last
 * reported, lag, the consumer and its state, the dead letters waiting, the
 * queue's cap, queued bytes and state (queue/limits.ts), and what is wrong
 * with the servers: the master's eviction policy, read now, and the
 * replica's policy and the clock offset as the consumer last measured them
 * (queue/servers.ts).
 */
import type { Redis } from 'ioredis';
import { DEFAULT_NAME, QueueKeys } from '../../shared/keys.js';
import { decodeEntry } from '../../shared/entry.js';
import { USAGE_FIELDS, usageFrom, capText, sizeText, stateText, type QueueUsage } from './limits.js';
import { describeVerify, readLastVerify, type LastVerify } from '../verify/result.js';
import { parseServerReport, serverWarnings, SERVERS_FIELD } from './servers.js';
import { readRoleStatus, roleLines, type RoleStatus } from '../failover/roles.js';

export interface QueueStatus extends QueueUsage {
  queue: string;
  /** the replica this status is of, among those the log feeds (consumer/replicas/) */
  replica: string;
  /** the list to LLEN */
  logKey: string;
  depth: number;
  oldestEntryAgeMs: number | null;
  masterSeq: number;
  /** replica watermark as last reported by the consumer */
  replicaWatermark: number | null;
  lagEntries: number | null;
  consumer: { id: string; holder: string | null; heartbeatAgeMs: number | null; leaseTtlMs: number } | null;
  /** the consumer's state, or 'no-consumer' when no live consumer holds the lease */
  state: string;
  stateSinceMs: number | null;
  detail: Record<string, unknown>;
  /** entries parked in the dead-letter list (`qsync dlq list`) */
  deadLetters: number;
  /** the set of keys written unqueued since the queue filled (policy `mark-dirty`) */
  dirtyKey: string;
  /** writes refused so far because the queue was full (policy `reject`), as the master counted them */
  refusedWrites: number;
  /** the last `qsync verify` of the queue, or null when none ran */
  lastVerify: (LastVerify & { ageMs: number }) | null;
  /** each side's maxmemory-policy: the master's read now, the replica's as the consumer last saw it; null when unknown */
  maxmemoryPolicy: { master: string | null; replica: string | null };
  /** the replica's clock minus the master's, as the consumer last measured it, or null */
  clock: { offsetMs: number; uncertaintyMs: number; maxOffsetMs: number; ageMs: number } | null;
  /** one sentence each: a server that may evict keys, clocks too far apart; empty when all is well */
  warnings: string[];
  /** whether this server is fenced, and the queue's role history (qsync failover, promote, rejoin) */
  role: RoleStatus;
  /** the servers the consumer is on (`host:port`; for a Sentinel group, its current master), as it last reported them */
  servers: { master: string | null; replica: string | null };
}

/** Names of the queues under a prefix, found by their meta or log keys. */
export async function findQueues(master: Redis, prefix: string): Promise<string[]> {
  const names = new Set<string>();
  let cursor = '0';
  const pattern = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:(.+):(meta|log|status)$`);
  do {
    const [next, keys] = await master.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    for (const k of keys) {
      const m = pattern.exec(k);
      if (m) names.add(m[1]);
    }
  } while (cursor !== '0');
  return [...names].sort();
}

export async function readStatus(master: Redis, prefix: string, queue: string, replica = DEFAULT_NAME): Promise<QueueStatus> {
  const keys = new QueueKeys(prefix, queue, replica);
  const [
    [, depth],
    [, head],
    [, [seq, refused, ...usage]],
    [, status],
    [, leaseTtl],
    [, lease],
    [, time],
    [, deadLetters],
    [, dirtyKeys],
    [, memory],
  ] = (await master
    .multi()
    .llen(keys.log)
    .lindexBuffer(keys.log, 0)
    .hmget(keys.meta, 'seq', 'refused', ...USAGE_FIELDS)
    .hgetall(keys.status)
    .pttl(keys.lease)
    .get(keys.lease)
    .time()
    .llen(keys.dlq)
    .scard(keys.dirty)
    .info('memory')
    .exec()) as [Error | null, unknown][] as [
    [null, number],
    [null, Buffer | null],
    [null, (string | null)[]],
    [null, Record<string, string>],
    [null, number],
    [null, string | null],
    [null, [string, string]],
    [null, number],
    [null, number],
    [Error | null, string | null],
  ];
  const now = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
  const lastVerify = await readLastVerify(master, keys);
  const role = await readRoleStatus(master, keys);
  let oldest: number | null = null;
  if (head) {
    try {
      oldest = Math.max(0, now - decodeEntry(head).ts);
    } catch {
      oldest = null;
    }
  }
  const masterSeq = Number(seq ?? 0);
  const watermark = status.watermark !== undefined ? Number(status.watermark) : null;
  const live = lease !== null && leaseTtl > 0;
  // The state is the lease holder's own report: one left by a consumer whose
  // lease ran out (paused, cut off) is stale until the new holder reports.
  const reported = live && (status.consumer === undefined || status.consumer === lease);
  let detail: Record<string, unknown> = {};
  try {
    detail = status.detail ? (JSON.parse(status.detail) as Record<string, unknown>) : {};
  } catch {
    detail = {};
  }
  const report = parseServerReport(status[SERVERS_FIELD]);
  const maxmemoryPolicy = { master: /maxmemory_policy:(\S+)/.exec(memory ?? '')?.[1] ?? null, replica: report?.maxmemoryPolicy.replica ?? null };
  const clock =
    report && report.clockOffsetMs !== null
      ? {
          offsetMs: report.clockOffsetMs,
          uncertaintyMs: report.clockUncertaintyMs ?? 0,
          maxOffsetMs: report.maxClockOffsetMs,
          ageMs: Math.max(0, now - report.at),
        }
      : null;
  return {
    queue,
    replica,
    logKey: keys.log,
    depth,
    oldestEntryAgeMs: oldest,
    masterSeq,
    replicaWatermark: watermark,
    lagEntries: watermark === null ? (masterSeq > 0 ? masterSeq : null) : Math.max(0, masterSeq - watermark),
    consumer: live
      ? {
          id: lease,
          holder: status.holder ?? null,
          heartbeatAgeMs: status.heartbeat ? Math.max(0, now - Number(status.heartbeat)) : null,
          leaseTtlMs: leaseTtl,
        }
      : null,
    state: live ? (reported ? (status.state ?? 'starting') : 'starting') : 'no-consumer',
    stateSinceMs: reported && status.stateSince ? Number(status.stateSince) : null,
    detail: reported ? detail : {},
    deadLetters,
    dirtyKey: keys.dirty,
    refusedWrites: Number(refused ?? 0),
    ...usageFrom(depth, usage, dirtyKeys),
    lastVerify: lastVerify && { ...lastVerify, ageMs: Math.max(0, now - lastVerify.at) },
    maxmemoryPolicy,
    clock,
    warnings: serverWarnings(maxmemoryPolicy, clock, clock?.maxOffsetMs ?? 0),
    role,
    servers: { master: (reported && status.masterNode) || null, replica: (reported && status.replicaNode) || null },
  };
}

/** The replicas a status shows for a queue: those in its replicas hash, or the default one when there are none. */
export async function replicaNames(master: Redis, prefix: string, queue: string): Promise<string[]> {
  const names = (await master.hkeys(new QueueKeys(prefix, queue).replicas)).sort();
  return names.length > 0 ? names : [DEFAULT_NAME];
}

/** The clock offset for people: which way, how far, how sure, how old. */
function clockText(c: QueueStatus['clock']): string {
  if (!c) return '- (measured by a running consumer)';
  const way = c.offsetMs === 0 ? 'same as the master' : `${Math.abs(c.offsetMs)} ms ${c.offsetMs > 0 ? 'ahead of' : 'behind'} the master`;
  return `replica ${way} (±${c.uncertaintyMs} ms), measured ${age(c.ageMs)} ago`;
}

/** A duration for people: ms, s or min. */
export function age(ms: number | null): string {
  if (ms === null) return '-';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60_000)} min`;
}

/** A plain-text table for people. */
export function formatStatus(rows: QueueStatus[]): string {
  if (rows.length === 0) return 'no qsync queues on this master';
  return rows
    .map((s) => {
      const lines = [
        `queue ${s.queue}${s.replica === DEFAULT_NAME ? '' : `  replica ${s.replica}`}  (LLEN ${s.logKey})`,
        `  state           ${s.state}${Object.keys(s.detail).length ? `  ${JSON.stringify(s.detail)}` : ''}`,
        `  depth           ${s.depth} entries, ${sizeText(s.queuedBytes)}, oldest ${age(s.oldestEntryAgeMs)}`,
        `  cap             ${capText(s.limits)}${s.full ? `  (full: ${s.limits.policy === 'reject' ? 'writes are refused' : 'writes are not queued'})` : ''}${s.refusedWrites ? `  ${s.refusedWrites} writes refused so far` : ''}`,
        `  queue state     ${stateText(s, s.dirtyKey)}`,
        `  master seq      ${s.masterSeq}`,
        `  replica at      ${s.replicaWatermark ?? '-'}  (lag ${s.lagEntries ?? '-'} entries)`,
        `  consumer        ${s.consumer ? `${s.consumer.holder ?? s.consumer.id}, heartbeat ${age(s.consumer.heartbeatAgeMs)} ago` : 'none holds the lease'}`,
        `  servers         master ${s.servers.master ?? '-'}, replica ${s.servers.replica ?? '-'}`,
        `  dead letters    ${s.deadLetters}${s.deadLetters ? '  (qsync dlq list)' : ''}`,
        `  last verify     ${s.lastVerify ? `${age(s.lastVerify.ageMs)} ago, ${describeVerify(s.lastVerify)} (${s.lastVerify.source})` : 'none (qsync verify)'}`,
        `  clock offset    ${clockText(s.clock)}`,
        `  memory policy   master ${s.maxmemoryPolicy.master ?? '-'}, replica ${s.maxmemoryPolicy.replica ?? '-'}`,
        ...s.warnings.map((w) => `  warning         ${w}`),
        ...roleLines(s.role),
      ];
      return lines.join('\n');
    })
    .join('\n\n');
}
