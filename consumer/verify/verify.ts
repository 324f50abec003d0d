/**
 * `qsync verify`: compares the master and the replica key by key, in both
 * directions, in every db that holds keys, without mistaking lag for
 * divergence.
 *
 * Keys are walked with SCAN and compared a chunk at a time (compare.ts), so
 * memory stays bounded. Each chunk's reads are bracketed by the replica's
 * watermark read before them and the master's sequence read after them; a
 * key that differs waits, with that window, until the entries still queued
 * are ruled out as its cause (settle.ts).
 */
import { Redis, type RedisOptions } from 'ioredis';
import { OWN_CONNECTION } from '../../shared/config.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE, DEFAULT_QUEUE_DB, QueueKeys, ownKeyPrefixes } from '../../shared/keys.js';
import { compareKeys } from './compare.js';
import { readLogView, recentKeys } from './log-view.js';
import { byDb, keyId } from '../../shared/entry-keys.js';
import { Settler, type Pending } from './settle.js';
import { resyncNeeded } from './stuck.js';
import { emptyResult, recordDifference, storeLastVerify, type Difference, type VerifyMode, type VerifyResult } from './result.js';

/** What a verification does; a control job carries these. Defaults: VERIFY_DEFAULTS, right below. */
export interface VerifySettings {
  /** full: every key; sample: a random fraction; recent: the keys of the newest entries. @default 'full' */
  mode: VerifyMode;
  /** fraction of keys checked in 'sample' mode. @default 0.01 */
  sample: number;
  /** entries whose keys 'recent' mode checks: the newest in the log. @default 1000 */
  recent: number;
  /** expiries this close count as equal. @default 1000 */
  ttlToleranceMs: number;
  /** how long to wait for the consumer to apply the entries that explain a difference. @default 30000 */
  drainTimeoutMs: number;
}

export const VERIFY_DEFAULTS: VerifySettings = { mode: 'full', sample: 0.01, recent: 1000, ttlToleranceMs: 1000, drainTimeoutMs: 30_000 };

/** The settings among `given` (options, or a job's data) over the defaults. */
export function verifySettings(given: object): VerifySettings {
  const known = Object.entries(given).filter(([k, v]) => k in VERIFY_DEFAULTS && v !== undefined && v !== null);
  return { ...VERIFY_DEFAULTS, ...Object.fromEntries(known) };
}

export interface VerifyProgress {
  /** keys walked by SCAN (both sides) or listed from the log */
  scanned: number;
  /** keys to walk, from INFO keyspace */
  total: number;
  checked: number;
  differences: number;
}

export interface VerifyOptions extends Partial<VerifySettings> {
  master: RedisOptions;
  replica: RedisOptions;
  prefix?: string;
  /** the replica compared, among those the log feeds: its watermark and last verify. @default 'default' */
  name?: string;
  queue?: string;
  queueDb?: number;
  /** a command without an answer for this long fails the verification */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** who ran it, kept with the last result */
  source?: string;
  onProgress?(p: VerifyProgress): void;
  /** each difference as it is settled, for a report file */
  onDifference?(d: Difference): void;
  /** called when keys wait for the consumer */
  onWaiting?(w: { keys: number; watermark: number; target: number; timeoutMs: number }): void;
}

const SCAN_COUNT = 1000;
/** Differences held before they are settled. */
const PENDING_MAX = 10_000;

/** Compares the master and the replica; resolves with what differs. */
export async function verify(options: VerifyOptions): Promise<VerifyResult> {
  const run = new Verification(options);
  try {
    return await run.run();
  } finally {
    run.close();
  }
}

class Verification {
  private readonly s: VerifySettings;
  private readonly keys: QueueKeys;
  private readonly queueDb: number;
  private readonly own: string[];
  private readonly clients = new Map<string, Redis>();
  private readonly pending: Pending[] = [];
  private readonly progress: VerifyProgress = { scanned: 0, total: 0, checked: 0, differences: 0 };
  private readonly result: VerifyResult;
  private readonly settler: Settler;
  private lastProgress = 0;

  constructor(private readonly o: VerifyOptions) {
    this.s = verifySettings(o);
    const prefix = o.prefix ?? DEFAULT_PREFIX;
    this.keys = new QueueKeys(prefix, o.queue ?? DEFAULT_QUEUE, o.name);
    this.queueDb = o.queueDb ?? DEFAULT_QUEUE_DB;
    // qsync's keys and the control jobs' (BullMQ's) are not replicated data.
    this.own = ownKeyPrefixes(prefix);
    this.result = emptyResult(this.s.mode);
    this.settler = new Settler(
      {
        watermark: () => this.watermark(),
        logView: (items) => readLogView(this.client('master', this.queueDb), this.keys, items),
        compare: (db, keys) => this.compare(db, keys, false),
        stuck: () => this.stuck(),
      },
      {
        drainTimeoutMs: this.s.drainTimeoutMs,
        ttlToleranceMs: this.s.ttlToleranceMs,
        signal: o.signal,
        onWaiting: o.onWaiting,
        decide: (p, inFlight) => this.add(p, inFlight),
      },
    );
  }

  /** A connection to one side in one db, opened once. */
  private client(side: 'master' | 'replica', db: number): Redis {
    const name = `${side} ${db}`;
    let client = this.clients.get(name);
    if (!client) {
      const timeout = this.o.timeoutMs ?? 15_000;
      client = new Redis({
        ...this.o[side],
        ...OWN_CONNECTION,
        db,
        connectionName: 'qsync:verify',
        connectTimeout: timeout,
        commandTimeout: timeout,
        maxRetriesPerRequest: 1,
        retryStrategy: (times) => (times > 3 ? null : 200 * times),
      });
      // Failures reach the commands that hit them.
      client.on('error', () => {});
      this.clients.set(name, client);
    }
    return client;
  }

  close(): void {
    for (const c of this.clients.values()) c.disconnect();
  }

  private check(): void {
    this.o.signal?.throwIfAborted();
  }

  private report(force = false): void {
    if (!this.o.onProgress || (!force && Date.now() - this.lastProgress < 250)) return;
    this.lastProgress = Date.now();
    this.o.onProgress({ ...this.progress });
  }

  async run(): Promise<VerifyResult> {
    const sizes = await this.keyspace();
    this.result.dbs = [...sizes.keys()].sort((a, b) => a - b);
    if (this.s.mode === 'recent') {
      const recent = await recentKeys(this.client('master', this.queueDb), this.keys, this.s.recent);
      this.progress.total = recent.length;
      for (const [db, keys] of byDb(recent)) {
        for (let i = 0; i < keys.length; i += SCAN_COUNT) {
          const chunk = keys.slice(i, i + SCAN_COUNT);
          this.progress.scanned += chunk.length;
          await this.compare(db, chunk);
          this.report();
        }
      }
    } else {
      this.progress.total = [...sizes.values()].reduce((a, b) => a + b, 0);
      for (const db of this.result.dbs) {
        await this.scan('master', db, async (chunk) => void (await this.compare(db, chunk)));
        await this.scan('replica', db, (chunk) => this.replicaOnly(db, chunk));
      }
    }
    // Walked: what is left is settling the differences.
    this.progress.total = this.progress.scanned;
    this.report(true);
    await this.settler.settle(this.pending.splice(0));
    this.result.keysChecked = this.progress.checked;
    this.result.finishedAt = Date.now();
    this.report(true);
    // Best effort: a user allowed to read but not write the master still gets the answer.
    await storeLastVerify(this.client('master', this.queueDb), this.keys, this.result, this.o.source ?? 'cli').catch(() => {});
    return this.result;
  }

  /** Keys per db on both sides (INFO keyspace), summed. */
  private async keyspace(): Promise<Map<number, number>> {
    const sizes = new Map<number, number>();
    for (const side of ['master', 'replica'] as const) {
      const info = await this.client(side, this.queueDb).info('keyspace');
      for (const [, db, keys] of info.matchAll(/^db(\d+):keys=(\d+)/gm)) sizes.set(Number(db), (sizes.get(Number(db)) ?? 0) + Number(keys));
    }
    return sizes;
  }

  private isOwn(db: number, key: Buffer): boolean {
    if (db !== this.queueDb) return false;
    const text = key.toString('latin1');
    return this.own.some((p) => text.startsWith(p));
  }

  /** Walks one side's keys in chunks: the ones this verification checks. */
  private async scan(side: 'master' | 'replica', db: number, each: (keys: Buffer[]) => Promise<void>): Promise<void> {
    const client = this.client(side, db);
    let cursor = '0';
    do {
      this.check();
      const [next, found] = await client.scanBuffer(cursor, 'COUNT', SCAN_COUNT);
      cursor = next.toString();
      this.progress.scanned += found.length;
      const keys = found.filter((k) => !this.isOwn(db, k) && (this.s.mode !== 'sample' || Math.random() < this.s.sample));
      if (keys.length) await each(keys);
      this.report();
    } while (cursor !== '0');
  }

  /** Replica keys the master does not have; the rest were compared from the master's side. */
  private async replicaOnly(db: number, keys: Buffer[]): Promise<void> {
    const pipeline = this.client('master', db).pipeline();
    for (const k of keys) pipeline.exists(k);
    const found = ((await pipeline.exec()) ?? []).map(([err, n]) => (err ? 1 : (n as number)));
    const missing = keys.filter((_k, i) => found[i] === 0);
    if (missing.length) await this.compare(db, missing);
  }

  /** Why the replica needs a resync, kept in the result; undefined while the consumer may bring it up to date. */
  private async stuck(): Promise<string | undefined> {
    const reason = await resyncNeeded(this.client('master', this.queueDb), this.client('replica', this.queueDb), this.keys);
    if (reason) this.result.resyncNeeded = reason;
    return reason;
  }

  private async watermark(): Promise<number> {
    return Number((await this.client('replica', this.queueDb).hget(this.keys.applied, 'seq')) ?? 0);
  }

  private async masterSeq(): Promise<number> {
    return Number((await this.client('master', this.queueDb).hget(this.keys.meta, 'seq')) ?? 0);
  }

  /**
   * Compares a chunk and returns the differences with their window. Keys
   * compared the first time count as checked, and their differences wait to
   * be settled.
   */
  private async compare(db: number, keys: Buffer[], first = true): Promise<Pending[]> {
    if (first) this.progress.checked += keys.length;
    const from = await this.watermark();
    const diffs = await compareKeys(this.client('master', db), this.client('replica', db), keys, this.s.ttlToleranceMs);
    if (diffs.length === 0) return [];
    const to = await this.masterSeq();
    const found = diffs.map((diff) => ({ db, diff, id: keyId(db, diff.key), from, to }));
    if (first) {
      this.pending.push(...found);
      if (this.pending.length >= PENDING_MAX) await this.settler.settle(this.pending.splice(0));
    }
    return found;
  }

  private add(p: Pending, inFlight: boolean): void {
    const d = recordDifference(this.result, p.db, p.diff, inFlight);
    this.progress.differences++;
    this.o.onDifference?.(d);
  }
}
