/**
 * What the master's log says about keys, for `qsync verify`: which keys the
 * entries still queued touch (so that a difference on them may be lag rather
 * than divergence), and the keys of the newest entries (`--mode recent`).
 * The log may hold millions of entries: it is read in chunks (of about 4 MiB,
 * so that big entries do not pile up in the master's reply) and only the keys
 * asked about are remembered.
 */
import type { Redis } from 'ioredis';
import { entryKeys, flushedDbs, keyId, parseKeyId, type DbKey } from '../../shared/entry-keys.js';
import { decodeEntry, type Entry } from '../../shared/entry.js';
import type { QueueKeys } from '../../shared/keys.js';

/** Most entries read at once, and about the most bytes: a log of big entries is read a few at a time. */
const CHUNK = 1000;
const CHUNK_BYTES = 4 * 1024 * 1024;

/** Entries to read at once, from the average entry (the meta hash's bytes over the log's length). */
async function chunkSize(master: Redis, keys: QueueKeys): Promise<number> {
  const [bytes, length] = await Promise.all([master.hget(keys.meta, 'bytes'), master.llen(keys.log)]);
  const average = length > 0 ? Number(bytes ?? 0) / length : 0;
  return average > 0 ? Math.max(1, Math.min(CHUNK, Math.floor(CHUNK_BYTES / average))) : CHUNK;
}

/** A key found different, with the window of log sequence numbers its reads spanned. */
export interface Window {
  id: string;
  /** the replica's watermark before the reads: the replica had applied at least this */
  from: number;
  /** the master's sequence after the reads: the master's values reflect at most this */
  to: number;
}

/** The log as read after some keys were found different. */
export interface LogView {
  /** ids of keys that an entry in (from, to] of their window touches: their difference may be lag */
  explained: Set<string>;
  /** true when every entry of the window was seen in the log (none had been trimmed before it was read) */
  covers(w: Window): boolean;
}

/**
 * Reads the log once, in chunks, for the keys of `windows` (one per key). Entries trimmed
 * while it reads (the consumer applied them) leave gaps, which `covers`
 * reports, since such an entry may have touched one of the keys.
 */
export async function readLogView(master: Redis, keys: QueueKeys, windows: Window[]): Promise<LogView> {
  const byId = new Map(windows.map((w) => [w.id, w]));
  const last = Math.max(0, ...windows.map((w) => w.to));
  const explained = new Set<string>();
  // Runs of consecutive sequence numbers seen, in order.
  const runs: [number, number][] = [];
  const size = await chunkSize(master, keys);
  let offset = 0;
  let chunk = await master.lrangeBuffer(keys.log, 0, size - 1);
  for (;;) {
    for (const raw of chunk) {
      let entry: Entry;
      try {
        entry = decodeEntry(raw);
      } catch {
        continue; // bytes that are not an entry write nothing
      }
      const run = runs[runs.length - 1];
      if (run && entry.seq === run[1] + 1) run[1] = entry.seq;
      else if (!run || entry.seq > run[1]) runs.push([entry.seq, entry.seq]);
      for (const { db, key } of entryKeys(entry)) {
        const w = byId.get(keyId(db, key));
        if (w && entry.seq > w.from && entry.seq <= w.to) explained.add(w.id);
      }
      // A flush touches every key of its db (of every db for FLUSHALL).
      const flushed = flushedDbs(entry);
      if (flushed !== undefined) {
        for (const w of windows) {
          if ((flushed === 'all' || parseKeyId(w.id).db === flushed) && entry.seq > w.from && entry.seq <= w.to) explained.add(w.id);
        }
      }
    }
    const tail = runs[runs.length - 1];
    if (chunk.length < size || (tail && tail[1] >= last)) break;
    offset += size;
    chunk = await master.lrangeBuffer(keys.log, offset, offset + size - 1);
  }
  return {
    explained,
    covers: (w) => w.from >= w.to || runs.some(([a, b]) => a <= w.from + 1 && w.to <= b),
  };
}

/** The distinct keys of the newest `n` entries in the log. */
export async function recentKeys(master: Redis, keys: QueueKeys, n: number): Promise<DbKey[]> {
  const found = new Map<string, DbKey>();
  const [length, size] = await Promise.all([master.llen(keys.log), chunkSize(master, keys)]);
  for (let start = Math.max(0, length - n); start < length; start += size) {
    for (const raw of await master.lrangeBuffer(keys.log, start, Math.min(length, start + size) - 1)) {
      try {
        for (const k of entryKeys(decodeEntry(raw))) found.set(keyId(k.db, k.key), k);
      } catch {
        // not an entry
      }
    }
  }
  return [...found.values()];
}
