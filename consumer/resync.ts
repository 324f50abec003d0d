/**
 * Resync: rebuilds the replica from a copy of the master while writers keep
 * writing, with no fork on the master and bounded memory here, then hands
 * over to the consumer at a log entry from which it can go on exactly once.
 *
 * 1. Under the consumer lease (nothing is applied or trimmed meanwhile),
 *    S0 = the master's seq; the replica is flushed and marked `resyncing`
 *    in one step (a worker treats that mark as resync-needed).
 * 2. Every key is copied (consumer/resync-copy.ts) as it was after some
 *    entry, its copy seq. Meanwhile the log after S0 is read, and every key
 *    an entry touches is remembered; such a key copied afterwards gets a
 *    marker: its copy seq. A key touched but not (or not since) copied is
 *    copied again after the scan. So only keys written during the resync are
 *    remembered, whatever the dataset's size.
 * 3. The log after S0 is replayed on the replica, command by command:
 *    skipped if all its keys have a marker >= the entry's seq (it is in their
 *    copies), applied if none has; if they disagree (RENAME, SMOVE... between
 *    keys copied at different times) its keys are all copied again first,
 *    which puts it in their copies. Replay goes on past every marker.
 * 4. The watermark is set to the last entry replayed and the mark removed,
 *    in one step; the consumer goes on from there exactly once. A crash at
 *    any point leaves the mark: run it again.
 */
import { randomUUID } from 'node:crypto';
import type { ChainableCommander, Redis, RedisOptions } from 'ioredis';
import { QueueKeys, DEFAULT_PREFIX, DEFAULT_QUEUE, DEFAULT_QUEUE_DB } from '../shared/keys.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { defineScripts } from '../shared/scripts.js';
import { probe } from '../shared/probe.js';
import { QsyncError } from '../shared/errors.js';
import type { Entry } from '../shared/entry.js';
import { Lease } from './lease.js';
import { jobsPrefix } from './jobs.js';
import { Copier, type CopyLimits } from './resync-copy.js';
import { LogFollower, Markers, ResyncError, keyId, parseKeyId, touchedKeys } from './resync-log.js';

export { ResyncError } from './resync-log.js';

export interface ResyncProgress {
  phase: 'copy' | 'recopy' | 'replay' | 'done';
  /** keys copied so far (copies again included) */
  copied: number;
  /** keys on the master when the resync started (INFO keyspace) */
  total: number;
  /** log entries replayed so far */
  replayed: number;
  /** seconds since the resync started */
  seconds: number;
}

export interface ResyncOptions extends Partial<CopyLimits> {
  master: RedisOptions;
  replica: RedisOptions;
  /** @default 'default' */
  queue?: string;
  /** @default 'qsync' */
  prefix?: string;
  /** @default 0 */
  queueDb?: number;
  /** keys per SCAN batch, each copied in one atomic read. @default 500 */
  scanCount?: number;
  /** the consumer lease the resync takes. @default 10000 */
  leaseMs?: number;
  /** most times keys are copied again during the replay before the resync gives up. @default 100000 */
  maxRecopies?: number;
  /**
   * The caller already holds the consumer lease and keeps it (a worker's
   * runExclusive). Without it the resync takes the lease itself and fails
   * if a live consumer holds it.
   */
  heldLease?: { valid(): boolean };
  /** stops the resync at its next step (the replica stays marked: run it again) */
  signal?: AbortSignal;
  logger?: Logger;
  onProgress?: (p: ResyncProgress) => void;
}

export interface ResyncResult {
  /** the entry the consumer goes on after */
  seq: number;
  copied: number;
  replayed: number;
  /** commands skipped because their effect was already in the copies */
  skipped: number;
  /** times the keys of a multi-key command were copied again because they were copied at different times */
  recopies: number;
  seconds: number;
}

/** Most ARGV items sent in one replay call. */
const REPLAY_ARGS = 20_000;

/** Copies the master's data to the replica and leaves it ready for the consumer. */
export async function runResync(options: ResyncOptions): Promise<ResyncResult> {
  const keys = new QueueKeys(options.prefix ?? DEFAULT_PREFIX, options.queue ?? DEFAULT_QUEUE);
  const queueDb = options.queueDb ?? DEFAULT_QUEUE_DB;
  const leaseMs = options.leaseMs ?? 10_000;
  const clients: Redis[] = [];
  const open = async (opts: RedisOptions, what: string) => {
    const c = await probe({ ...opts, db: queueDb }, what, `${opts.host ?? 'localhost'}:${opts.port ?? 6379}`);
    defineScripts(c);
    clients.push(c);
    return c;
  };
  let renew: NodeJS.Timeout | undefined;
  let own: Lease | undefined;
  try {
    const [master, scanner, replica] = [await open(options.master, 'master'), await open(options.master, 'master'), await open(options.replica, 'replica')];
    if (!options.heldLease) {
      const lease = (own = new Lease(master, keys, `resync-${randomUUID()}`, leaseMs));
      const wait = await lease.acquire();
      if (wait > 0) throw new ResyncError(`qsync: resync: a consumer holds the lease of queue '${keys.queue}' (for ${wait} more ms); stop it first, or run the resync inside it as a job`);
      renew = setInterval(() => void lease.acquire().catch(() => {}), Math.max(100, Math.floor(leaseMs / 3)));
    }
    return await new Resync(master, scanner, replica, keys, queueDb, options.heldLease ?? own!, options).run();
  } catch (err) {
    if (err instanceof QsyncError) throw err;
    throw new ResyncError(`qsync: resync failed: ${(err as Error).message}; the replica stays marked for a resync, run it again`);
  } finally {
    clearInterval(renew);
    await own?.release().catch(() => {});
    for (const c of clients) c.disconnect();
  }
}

/** Runs a MULTI and throws its first error (exec() reports them per command). */
async function execAll(multi: ChainableCommander): Promise<void> {
  for (const [err] of (await multi.exec()) ?? []) if (err) throw err;
}

class Resync {
  private readonly markers = new Markers();
  private readonly copier: Copier;
  private readonly log: Logger;
  private readonly started = Date.now();
  private readonly scanCount: number;
  private readonly progress: ResyncProgress = { phase: 'copy', copied: 0, total: 0, replayed: 0, seconds: 0 };
  private recopies = 0;
  private skipped = 0;

  constructor(
    private readonly master: Redis,
    private readonly scanner: Redis,
    private readonly replica: Redis,
    private readonly keys: QueueKeys,
    private readonly queueDb: number,
    private readonly lease: { valid(): boolean },
    private readonly options: ResyncOptions,
  ) {
    this.scanCount = options.scanCount ?? 500;
    this.log = (options.logger ?? createLogger('silent')).child({ queue: keys.queue, resync: true });
    this.copier = new Copier(master, replica, keys, queueDb, {
      bigMembers: options.bigMembers ?? 10_000,
      bigBytes: options.bigBytes ?? 8 * 1024 * 1024,
      chunk: options.chunk ?? 2000,
    });
  }

  async run(): Promise<ResyncResult> {
    const [seq, epoch, ts] = await this.master.hmget(this.keys.meta, 'seq', 'epoch', 'ts');
    const s0 = Number(seq ?? 0);
    this.copier.start(s0, epoch ?? '');
    await this.master.hset(this.keys.status, 'state', 'resyncing', 'stateSince', Date.now(), 'detail', JSON.stringify({ from: s0 }));
    // One step: a replica is never empty without the mark.
    await execAll(this.replica.multi().flushall().hset(this.keys.applied, 'resyncing', JSON.stringify({ from: s0, startedAt: Date.now() })));
    this.log.info({ from: s0 }, 'resync: replica flushed; copying');
    const dbs = await this.keyspace();
    const follower = new LogFollower(this.master, this.keys, s0);
    const touch = (e: Entry) => this.markers.touch(e);
    for (const db of dbs) await this.scanDb(db, follower, touch);
    // A key the scan missed was absent at some point of it: deleted or renamed
    // (then touched by an entry up to now), or created later (absent at S0 too).
    await follower.readTo(await this.masterSeq(), touch);
    // Keys touched during the scan but not copied since: copy them now.
    this.progress.phase = 'recopy';
    const stale = this.markers.stale();
    for (let i = 0; i < stale.length; i += this.scanCount) await this.copyIds(stale.slice(i, i + this.scanCount));
    this.progress.phase = 'replay';
    const last = await this.replay(s0, Number(ts ?? 0));
    await this.copier.settle();
    // The history replayed must still be the master's (no restart since).
    const [seqNow, epochNow] = await this.master.hmget(this.keys.meta, 'seq', 'epoch');
    this.copier.check(Number(seqNow ?? 0), epochNow ?? '');
    this.checkLease();
    const watermark = ['seq', String(last.seq), ...(epochNow ? ['epoch', epochNow] : []), ...(last.ts ? ['ts', String(last.ts)] : [])];
    await execAll(this.replica.multi().hset(this.keys.applied, ...watermark).hdel(this.keys.applied, 'resyncing'));
    this.report('done');
    this.log.info({ seq: last.seq, copied: this.progress.copied, replayed: this.progress.replayed, skipped: this.skipped, recopies: this.recopies }, 'resync: done; the consumer goes on from here');
    return { seq: last.seq, copied: this.progress.copied, replayed: this.progress.replayed, skipped: this.skipped, recopies: this.recopies, seconds: (Date.now() - this.started) / 1000 };
  }

  /** The dbs holding keys, and the total key count for progress. */
  private async keyspace(): Promise<number[]> {
    const info = await this.master.info('keyspace');
    const dbs: number[] = [];
    for (const m of info.matchAll(/^db(\d+):keys=(\d+)/gm)) {
      dbs.push(Number(m[1]));
      this.progress.total += Number(m[2]);
    }
    return dbs;
  }

  private async scanDb(db: number, follower: LogFollower, touch: (e: Entry) => void): Promise<void> {
    await this.scanner.select(db);
    const own = [`${this.keys.prefix}:`, `${jobsPrefix(this.keys.prefix)}:`];
    let cursor = '0';
    do {
      this.checkLease();
      const [next, found] = await this.scanner.scanBuffer(cursor, 'COUNT', this.scanCount);
      cursor = next.toString();
      // qsync's own keys (log, meta, lease, control jobs...) stay on the master.
      const batch = db === this.queueDb ? found.filter((k) => !own.some((o) => k.toString('latin1').startsWith(o))) : found;
      if (batch.length === 0) continue;
      const copied = await this.copier.copy(db, batch);
      await follower.readTo(Math.max(...copied.map((c) => c.seq)), touch);
      for (const { key, seq } of copied) this.markers.copied(keyId(db, key), seq);
      this.count(copied.length);
    } while (cursor !== '0');
  }

  /** Copies keys given by id again, and sets their markers. */
  private async copyIds(ids: string[]): Promise<void> {
    const byDb = new Map<number, Buffer[]>();
    for (const { db, key } of ids.map(parseKeyId)) {
      if (!byDb.has(db)) byDb.set(db, []);
      byDb.get(db)!.push(key);
    }
    for (const [db, keys] of byDb) {
      this.checkLease();
      for (const { key, seq } of await this.copier.copy(db, keys)) this.markers.set(keyId(db, key), seq);
      this.count(keys.length);
    }
  }

  /** Replays the log after s0 until past every marker; returns the last entry replayed. */
  private async replay(s0: number, ts0: number): Promise<{ seq: number; ts: number }> {
    const follower = new LogFollower(this.master, this.keys, s0);
    let done = { seq: s0, ts: ts0 };
    let args: Array<string | Buffer> = [];
    const flush = async () => {
      if (args.length === 0) return;
      const [code, at, err] = await this.replica.qsyncResyncReplay(this.keys.applied, this.queueDb, done.seq, done.ts, ...args);
      if (code !== 0) throw new ResyncError(`qsync: resync: the replica refused a replayed command (${at} of the batch ending after entry ${done.seq}): ${err}`);
      args = [];
    };
    const replayEntry = async (e: Entry) => {
      for (const cmd of e.commands) {
        const ids = touchedKeys(e.db, cmd);
        const ahead = this.markers.ahead(ids, e.seq);
        if (ahead > 0 && ahead < ids.length) {
          // Keys copied at different times: copy them all again, past this entry.
          if (++this.recopies > (this.options.maxRecopies ?? 100_000)) throw new ResyncError(`qsync: resync: keys kept changing under multi-key commands (${this.recopies - 1} copies again); run it again when writes are calmer`);
          await flush();
          await this.copyIds(ids);
          this.skipped++;
        } else if (ahead > 0) {
          this.skipped++;
        } else {
          args.push(String(e.db), String(cmd.length), ...cmd);
        }
      }
      done = { seq: e.seq, ts: e.ts };
      this.progress.replayed++;
      if (args.length >= REPLAY_ARGS) {
        this.checkLease();
        await flush();
        this.report('replay');
      }
    };
    for (;;) {
      this.checkLease();
      const target = Math.max(await this.masterSeq(), this.markers.max);
      if (follower.last >= target) break;
      await follower.readTo(target, replayEntry);
    }
    await flush();
    return done;
  }

  private masterSeq = async (): Promise<number> => Number((await this.master.hget(this.keys.meta, 'seq')) ?? 0);

  /** Between steps: stop if asked to, or if the lease may have run out. */
  private checkLease(): void {
    if (this.options.signal?.aborted) throw new ResyncError('qsync: resync: interrupted; the replica stays marked for a resync, run it again');
    if (!this.lease.valid()) throw new ResyncError('qsync: resync: lost the consumer lease; run it again');
  }

  private count(n: number): void {
    this.progress.copied += n;
    this.report(this.progress.phase);
  }

  private report(phase: ResyncProgress['phase']): void {
    this.progress.phase = phase;
    this.progress.seconds = (Date.now() - this.started) / 1000;
    this.options.onProgress?.({ ...this.progress });
  }
}
