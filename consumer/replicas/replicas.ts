/**
 * The replicas one log feeds (`qsync replicas`): each attached replica's
 * position in the log, its lag and its consumer, read from the master; and
 * detaching one, so that the log no longer waits for it. Where each replica
 * is in the log is kept by shared/lua/includes/replicas.lua.
 */
import type { Redis } from 'ioredis';
import type { QueueKeys } from '../../shared/keys.js';
import { decodeEntry } from '../../shared/entry.js';

export interface ReplicaView {
  name: string;
  /** attached: the log keeps what it has not applied; detached: it needs a resync */
  attachment: 'attached' | 'detached';
  /** entries of the log it confirmed since the log began (null when detached) */
  position: number | null;
  /** its watermark as its consumer last confirmed it (null when detached) */
  seq: number | null;
  /** entries in the log it has not confirmed */
  lagEntries: number | null;
  /** age of the oldest entry it has not confirmed, in seconds (0 when it has them all) */
  lagSeconds: number | null;
  /** the consumer holding its lease, with its state and last heartbeat */
  consumer: { id: string; holder: string | null; state: string | null; heartbeatAgeMs: number | null } | null;
  /** when and why it was detached */
  detached: { atMs: number; why: string } | null;
}

const fields = (v: string): string[] => v.split(':');

/** Every replica in the replicas hash, by name. */
export async function listReplicas(master: Redis, keys: QueueKeys): Promise<ReplicaView[]> {
  const [[, all], [, meta], [, length], [, time]] = (await master
    .multi()
    .hgetall(keys.replicas)
    .hmget(keys.meta, 'trimmed')
    .llen(keys.log)
    .time()
    .exec()) as [[null, Record<string, string>], [null, (string | null)[]], [null, number], [null, [string, string]]];
  const now = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
  const trimmed = Number(meta[0] ?? 0);
  const tail = trimmed + length;
  const views: ReplicaView[] = [];
  for (const name of Object.keys(all).sort()) {
    const mine = keys.forReplica(name);
    const [[, status], [, lease], [, ttl]] = (await master.multi().hgetall(mine.status).get(mine.lease).pttl(mine.lease).exec()) as [
      [null, Record<string, string>],
      [null, string | null],
      [null, number],
    ];
    const consumer =
      lease && ttl > 0
        ? {
            id: lease,
            holder: status.holder ?? null,
            state: status.consumer === lease ? (status.state ?? null) : null,
            heartbeatAgeMs: status.heartbeat ? Math.max(0, now - Number(status.heartbeat)) : null,
          }
        : null;
    const [first, second, ...rest] = fields(all[name]);
    if (first === 'detached') {
      views.push({
        name,
        attachment: 'detached',
        position: null,
        seq: null,
        lagEntries: null,
        lagSeconds: null,
        consumer,
        detached: { atMs: Number(second), why: rest.join(':') },
      });
      continue;
    }
    const position = Number(first);
    const seq = Number(rest[0]);
    const lagEntries = Math.max(0, tail - position);
    views.push({
      name,
      attachment: 'attached',
      position,
      seq,
      lagEntries,
      lagSeconds: await oldestAge(master, keys, position - trimmed, lagEntries, now),
      consumer,
      detached: null,
    });
  }
  return views;
}

/** Seconds since the entry at offset of the log was written; 0 when the replica has every entry. */
async function oldestAge(master: Redis, keys: QueueKeys, offset: number, lag: number, now: number): Promise<number | null> {
  if (lag === 0) return 0;
  const raw = await master.lindexBuffer(keys.log, offset);
  try {
    return raw ? Math.max(0, now - decodeEntry(raw).ts) / 1000 : null;
  } catch {
    return null;
  }
}

/** Detaches a replica; false when it was not attached. */
export async function detachReplica(master: Redis, keys: QueueKeys, name: string): Promise<boolean> {
  return (await master.qsyncDetach(keys.meta, keys.log, name, 'qsync replicas detach')) === 1;
}

/** A duration for people. */
function ago(ms: number | null): string {
  if (ms === null) return '-';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** What `qsync replicas` prints. */
export function formatReplicas(views: ReplicaView[], keys: QueueKeys): string {
  if (views.length === 0) return `no replica attached to queue ${keys.queue} (${keys.replicas})`;
  const rows = views.map((v) => {
    const consumer = v.consumer
      ? `${v.consumer.holder ?? v.consumer.id} (${v.consumer.state ?? 'starting'}), heartbeat ${ago(v.consumer.heartbeatAgeMs)} ago`
      : 'no consumer';
    if (v.detached)
      return `${v.name}  detached ${new Date(v.detached.atMs).toISOString()}: ${v.detached.why}; needs qsync resync --name ${v.name}  ${consumer}`;
    return `${v.name}  at ${v.seq} (position ${v.position}), lag ${v.lagEntries} entries, ${v.lagSeconds === null ? '-' : `${v.lagSeconds.toFixed(1)} s`}  ${consumer}`;
  });
  return [`queue ${keys.queue}  (${keys.replicas})`, ...rows.map((r) => `  ${r}`)].join('\n');
}
