/**
 * A master that lost writes the replica had already applied: a Sentinel (or
 * any) failover to a local replica that had not received the old master's
 * last entries (replication is asynchronous). The new master's history
 * parts from the replica's after some entry K: entries K+1 to W (the
 * replica's watermark) are on the replica only, and the new master may
 * already reuse those sequence numbers for other writes.
 *
 * To say what diverged, the replica keeps a record of the entries applied
 * last (`<applied>:recent`, a sorted set scored by seq: each member the
 * entry's seq, time, the ids of the keys it touched and its log's epoch), written by the
 * consumer before each batch it applies (so it may hold entries a failed
 * batch never applied: a record names keys to copy, and copying a key from
 * the master is never wrong). From that record and the master's log:
 * - K, the last entry both histories share (the same seq with the same
 *   time, or the entry the master's log names as the one before its first);
 * - the entries K+1..W the replica applied and the master lost, and their keys.
 * `qsync repair` then copies those keys from the master, sets the watermark
 * back to K and replays the master's log after K (copy/repair.ts): no full
 * copy. Without a record of every entry K+1..W (recording off, or fewer
 * kept than were lost, or a FLUSHDB among them) only a resync can help.
 */
import type { Redis } from 'ioredis';
import { decodeEntry } from '../../shared/entry.js';
import { entryKeys, flushedDbs, keyId, parseKeyId } from '../../shared/entry-keys.js';
import type { QueueKeys } from '../../shared/keys.js';

/** Entries the replica keeps a record of, by default, when the master is a Sentinel group. */
export const KEEP_APPLIED_SENTINEL = 10_000;

/** The key of the record, beside the watermark it describes. */
export const recentKey = (keys: QueueKeys): string => `${keys.applied}:recent`;

interface Applied {
  seq: number;
  ts: number;
  /** key ids (entry-keys.ts); null when the entry flushed a db: its keys cannot be listed */
  ids: string[] | null;
}

/**
 * Commands that record the entries of a batch about to be applied, for the
 * entries after `after` (the replica's watermark when the consumer started
 * reading: those before it are the master's, not what the replica applied).
 * Queued on the replica's connection before the apply, they cost no round
 * trip. Records from `after` on are replaced: one from a batch that was not
 * applied may be of another history.
 */
export function recordApplied(replica: Redis, keys: QueueKeys, epoch: string, entries: Buffer[], after: number, keep: number): void {
  const members: (number | string)[] = [];
  let first = Number.POSITIVE_INFINITY;
  for (const raw of entries) {
    let e: ReturnType<typeof decodeEntry>;
    try {
      e = decodeEntry(raw);
    } catch {
      continue;
    }
    if (e.seq <= after) continue;
    first = Math.min(first, e.seq);
    const ids = flushedDbs(e) === undefined ? [...new Set(entryKeys(e).map((k) => keyId(k.db, k.key)))] : null;
    members.push(e.seq, JSON.stringify([e.seq, e.ts, ids, epoch]));
  }
  if (members.length === 0) return;
  const key = recentKey(keys);
  const pipe = replica
    .pipeline()
    .zremrangebyscore(key, first, '+inf')
    .zadd(key, ...members)
    .zremrangebyrank(key, 0, -keep - 1);
  // Errors show in the apply sent right after on the same connection.
  pipe.exec().catch(() => {});
}

/** What diverged, as reported and as repaired. */
export interface Divergence {
  /** the last entry both histories share; null when the record does not reach back to it */
  sharedUpTo: number | null;
  /** its time, for the watermark set back to it; null when not known */
  sharedTs: number | null;
  /** the entries the replica applied that the master lost: sharedUpTo + 1 .. replicaAt */
  replicaAt: number;
  /** the master's sequence now (its entries after sharedUpTo are another history, or new writes) */
  masterSeq: number;
  /** ids of the keys those entries touched; null when the record does not cover them all */
  keys: string[] | null;
  /** why keys is null */
  unknown?: string;
}

/** Most entries of the master's log read to find where the histories part. */
const SCAN_ENTRIES = 100_000;
const CHUNK = 500;

/** The master's entries up to seq `upTo` (or the end of its log): seq -> [ts, prevTs]. */
async function masterEntries(master: Redis, keys: QueueKeys, upTo: number): Promise<Map<number, { ts: number; prevTs: number }>> {
  const found = new Map<number, { ts: number; prevTs: number }>();
  for (let at = 0; at < SCAN_ENTRIES; at += CHUNK) {
    const raws = await master.lrangeBuffer(keys.log, at, at + CHUNK - 1);
    for (const raw of raws) {
      try {
        const e = decodeEntry(raw);
        found.set(e.seq, { ts: e.ts, prevTs: e.prevTs });
        if (e.seq > upTo) return found;
      } catch {
        // not an entry: nothing to compare
      }
    }
    if (raws.length < CHUNK) break;
  }
  return found;
}

/** The replica's record of the entries of log `epoch` it applied up to its watermark, by seq. */
async function appliedRecord(replica: Redis, keys: QueueKeys, w: number, epoch: string): Promise<Map<number, Applied>> {
  const record = new Map<number, Applied>();
  for (const member of await replica.zrangebyscore(recentKey(keys), '-inf', w)) {
    const [seq, ts, ids, of] = JSON.parse(member) as [number, number, string[] | null, string];
    // Entries of a log the replica followed before (a failover of qsync's own) say nothing of this one.
    if (of === epoch) record.set(seq, { seq, ts, ids });
  }
  return record;
}

/**
 * Where the master's history parts from the replica's, or null when it does
 * not (the master holds or follows every entry the replica applied), or
 * when they follow different logs (the consumer reports that on its own).
 */
export async function findDivergence(master: Redis, replica: Redis, keys: QueueKeys): Promise<Divergence | null> {
  // HMGET and LRANGE: what the consumer's ACL users may run (shared/acl.ts).
  const [[seq, epoch], [applied, appliedTs, appliedEpoch]] = await Promise.all([
    master.hmget(keys.meta, 'seq', 'epoch'),
    replica.hmget(keys.applied, 'seq', 'ts', 'epoch'),
  ]);
  if (applied === null || !epoch || appliedEpoch !== epoch) return null;
  const [masterSeq, w, ts] = [Number(seq ?? 0), Number(applied), appliedTs === null ? null : Number(appliedTs)];
  const [log, record] = await Promise.all([masterEntries(master, keys, w), appliedRecord(replica, keys, w, epoch)]);
  // The watermark's own time is known even without a record.
  const tsOf = (s: number) => record.get(s)?.ts ?? (s === w ? (ts ?? undefined) : undefined);
  const shares = (s: number): boolean => {
    const entry = log.get(s);
    if (entry) return tsOf(s) === entry.ts;
    const next = log.get(s + 1);
    if (next) return tsOf(s) === next.prevTs;
    // Nothing of the master's log at or after s: entries up to its sequence
    // left its log only once this replica had applied them.
    return log.size === 0 && s === masterSeq;
  };
  // Without the time of the replica's last entry, nothing says the master's differs.
  if (masterSeq >= w && (tsOf(w) === undefined || shares(w))) return null;
  const lowest = Math.min(...record.keys(), masterSeq);
  let k = Math.min(w, masterSeq);
  while (k > lowest && !shares(k)) k--;
  if (!shares(k)) {
    const unknown = record.size
      ? 'the record of applied entries does not reach back to where the histories part'
      : 'the replica keeps no record of the entries it applied';
    return { sharedUpTo: null, sharedTs: null, replicaAt: w, masterSeq, keys: null, unknown };
  }
  const found = { sharedUpTo: k, sharedTs: tsOf(k) ?? log.get(k)?.ts ?? log.get(k + 1)?.prevTs ?? null, replicaAt: w, masterSeq };
  const ids = new Set<string>();
  for (let s = k + 1; s <= w; s++) {
    const r = record.get(s);
    if (!r?.ids) return { ...found, keys: null, unknown: r ? `entry ${s} flushed a db` : `entry ${s} is not in the record of applied entries` };
    for (const id of r.ids) ids.add(id);
  }
  return { ...found, keys: [...ids] };
}

/** The entries on the replica only, in words: `entries 6 to 10 are`. */
export function lostEntries(d: Divergence): string {
  if (d.sharedUpTo === null) return `entries up to ${d.replicaAt} (from where, not known) are`;
  const from = d.sharedUpTo + 1;
  return from === d.replicaAt ? `entry ${from} is` : `entries ${from} to ${d.replicaAt} are`;
}

/** A key id for people: `db:key`, the key as text. */
const shownKey = (id: string): string => {
  const { db, key } = parseKeyId(id);
  return `${db}:${key.toString()}`;
};

/** Keys a report lists by name; the rest are counted. */
const SHOWN_KEYS = 20;

/** The divergence in words (what is on the replica only, and what repairs it) and figures, for the status and the logs. */
export function describeDivergence(d: Divergence): { reason: string; diverged: Record<string, unknown> } {
  const fix = d.keys
    ? `qsync repair copies their ${d.keys.length} keys from the master, no full copy`
    : `${d.unknown}: rebuild the replica with qsync resync`;
  return {
    reason: `${lostEntries(d)} on the replica only (a failover to a replica that lagged?); ${fix}`,
    diverged: {
      sharedUpTo: d.sharedUpTo,
      replicaOnly: d.sharedUpTo === null ? { to: d.replicaAt } : { from: d.sharedUpTo + 1, to: d.replicaAt },
      masterSeq: d.masterSeq,
      ...(d.keys ? { keyCount: d.keys.length, keys: d.keys.slice(0, SHOWN_KEYS).map(shownKey) } : { keys: null }),
      repair: d.keys ? 'qsync repair' : 'qsync resync',
    },
  };
}

/**
 * Prepares the repair of a replica whose master lost writes it applied:
 * adds the keys of the lost entries to the repair set on the master, then
 * sets the replica's watermark back to the last entry both share, marked
 * as under repair in the same step. The repair (copy/repair.ts) copies
 * those keys and replays the master's log from there. Returns what
 * diverged, or null when nothing did (or a repair is already under way:
 * it carries on). A divergence whose keys are not known changes nothing.
 */
export async function rewindDiverged(master: Redis, replica: Redis, keys: QueueKeys): Promise<Divergence | null> {
  const [mark] = await replica.hmget(keys.applied, 'resyncing');
  if (mark) return null;
  const d = await findDivergence(master, replica, keys);
  if (!d?.keys || d.sharedUpTo === null) return d;
  const members = d.keys.map((id) => {
    const { db, key } = parseKeyId(id);
    return Buffer.concat([Buffer.from(`${db}:`), key]);
  });
  for (let i = 0; i < members.length; i += 1000) await master.sadd(keys.repairing, ...members.slice(i, i + 1000));
  const markText = JSON.stringify({ kind: 'repair', from: d.sharedUpTo, startedAt: Date.now(), lost: { from: d.sharedUpTo + 1, to: d.replicaAt } });
  const multi = replica.multi().hset(keys.applied, 'seq', d.sharedUpTo, 'resyncing', markText).hdel(keys.applied, 'part');
  // Without the time of the entry shared last, the next entry's link is not checked.
  if (d.sharedTs === null) multi.hdel(keys.applied, 'ts');
  else multi.hset(keys.applied, 'ts', d.sharedTs);
  for (const [err] of (await multi.zremrangebyscore(recentKey(keys), `(${d.sharedUpTo}`, '+inf').exec()) ?? []) if (err) throw err;
  return d;
}
