/**
 * What a resync and a repair share: copying keys from the master to the
 * replica, each as it was after a known log entry, and then replaying the
 * log on top of the copies with the marker rule, under the consumer lease.
 *
 * The marker rule: a command of an entry is skipped if all its keys have a
 * copy at or after the entry (it is in their copies), applied if none has;
 * if they disagree (RENAME, SMOVE... between keys copied at different
 * times) its keys are all copied again first, which puts it in their copies.
 * A command applied is first given the master's view of its keys, as the
 * consumer does (shared/lua/includes/view.lua); when a key the master had is
 * gone from the replica (it expired there first while the copy waited), its
 * keys are copied again too.
 * The replay goes on past every marker, then the watermark is set to the
 * last entry replayed and the replica's mark removed, in one step.
 */
import { randomUUID } from 'node:crypto';
import type { ChainableCommander, Redis, RedisOptions } from 'ioredis';
import { QueueKeys, DEFAULT_PREFIX, DEFAULT_QUEUE, DEFAULT_QUEUE_DB } from '../../shared/keys.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { defineScripts } from '../../shared/scripts.js';
import { probe } from '../../shared/probe.js';
import { describeTarget } from '../../shared/config.js';
import { QsyncError } from '../../shared/errors.js';
import { ReplyCode } from '../../shared/reply-codes.js';
import type { Entry } from '../../shared/entry.js';
import { Lease } from '../drain/lease.js';
import { Copier, type CopyLimits } from './copier.js';
import { LogFollower, Markers, touchedKeys, type Fail } from './log-follower.js';
import { keyId, parseKeyId } from '../../shared/entry-keys.js';

export interface CopyProgress {
  phase: 'copy' | 'recopy' | 'replay' | 'done';
  /** keys copied so far (copies again included) */
  copied: number;
  /** keys to copy: on the master when a resync started, in the dirty set for a repair */
  total: number;
  /** log entries replayed so far */
  replayed: number;
  /** seconds since the run started */
  seconds: number;
}

/** Options a resync and a repair take alike. */
/** Defaults of a resync's and a repair's tunable options, shared with the CLI's flags. */
export const COPY_DEFAULTS = {
  scanCount: 500,
  leaseMs: 10_000,
  maxRecopies: 100_000,
  bigMembers: 10_000,
  bigBytes: 8 * 1024 * 1024,
  chunk: 2000,
} as const;

export interface CopyRunOptions extends Partial<CopyLimits> {
  master: RedisOptions;
  replica: RedisOptions;
  /** @default 'default' */
  queue?: string;
  /** @default 'qsync' */
  prefix?: string;
  /** the replica to rebuild, among those the log feeds (consumer/replicas/). @default 'default' */
  name?: string;
  /** @default 0 */
  queueDb?: number;
  /** keys per batch, each copied in one atomic read. @default 500 */
  scanCount?: number;
  /** the consumer lease the run takes. @default 10000 */
  leaseMs?: number;
  /** most times keys are copied again during the replay before the run gives up. @default 100000 */
  maxRecopies?: number;
  /**
   * The caller already holds the consumer lease and keeps it (a worker's
   * runExclusive). Without it the run takes the lease itself and fails if a
   * live consumer holds it.
   */
  heldLease?: { valid(): boolean };
  /** stops the run at its next step (the replica stays marked: run it again) */
  signal?: AbortSignal;
  logger?: Logger;
  onProgress?: (p: CopyProgress) => void;
}

export interface CopyRunResult {
  /** the entry the consumer goes on after */
  seq: number;
  copied: number;
  replayed: number;
  /** commands skipped because their effect was already in the copies */
  skipped: number;
  /** times the keys of a command were copied again: copied at different times, or one had expired on the replica first */
  recopies: number;
  seconds: number;
}

/** The connections and context a run works with. */
export interface RunContext {
  master: Redis;
  /** a second master connection, for SCAN and SSCAN in another db */
  scanner: Redis;
  replica: Redis;
  keys: QueueKeys;
  queueDb: number;
  lease: { valid(): boolean };
  /**
   * The replica is a Redis Cluster node: the scripts that write to it declare
   * every key they write, so that the node checks them all before the script
   * runs (a slot moving away is redirected or waits instead of half written).
   */
  declareKeys?: boolean;
}

/** A logged command waiting to be replayed, with its master's view (shared/lua/includes/view.lua) and the ids of its keys. */
interface Replayed {
  db: number;
  cmd: Buffer[];
  view: number[];
  ids: string[];
  seq: number;
}

/** Most ARGV items sent in one replay call. */
const REPLAY_ARGS = 20_000;

/**
 * Opens the connections, takes the consumer lease unless the caller holds it,
 * and runs `body`. `fail` makes the error of this kind of run (its message
 * and exit code); an unexpected error is turned into one.
 */
export async function withRunContext<T>(options: CopyRunOptions, what: string, fail: Fail, body: (ctx: RunContext) => Promise<T>): Promise<T> {
  const keys = new QueueKeys(options.prefix ?? DEFAULT_PREFIX, options.queue ?? DEFAULT_QUEUE, options.name);
  const queueDb = options.queueDb ?? DEFAULT_QUEUE_DB;
  const leaseMs = options.leaseMs ?? COPY_DEFAULTS.leaseMs;
  const clients: Redis[] = [];
  const open = async (opts: RedisOptions, side: string) => {
    const c = await probe({ ...opts, db: queueDb }, side, describeTarget(opts));
    defineScripts(c);
    clients.push(c);
    return c;
  };
  try {
    const [master, scanner, replica] = [
      await open(options.master, 'master'),
      await open(options.master, 'master'),
      await open(options.replica, 'replica'),
    ];
    const run = (lease: { valid(): boolean }) => body({ master, scanner, replica, keys, queueDb, lease });
    if (options.heldLease) return await run(options.heldLease);
    const busy = (wait: number) =>
      fail(`a consumer holds the lease of queue '${keys.queue}' (for ${wait} more ms); stop it first, or run the ${what} inside it as a job (--job)`);
    return await underLease(new Lease(master, keys, `${what}-${randomUUID()}`, leaseMs), busy, run);
  } catch (err) {
    if (err instanceof QsyncError) throw err;
    throw fail(`${(err as Error).message}; the replica stays marked, run the ${what} again`);
  } finally {
    for (const c of clients) c.disconnect();
  }
}

/**
 * Takes `lease` (failing with `busy(ms left)` when a consumer holds it),
 * renews it every third of its time while `body` runs, and releases it.
 */
export async function underLease<T>(lease: Lease, busy: (wait: number) => QsyncError, body: (lease: Lease) => Promise<T>): Promise<T> {
  const wait = await lease.acquire();
  if (wait > 0) throw busy(wait);
  const renew = setInterval(() => void lease.acquire().catch(() => {}), Math.max(100, Math.floor(lease.ms / 3)));
  try {
    return await body(lease);
  } finally {
    clearInterval(renew);
    await lease.release().catch(() => {});
  }
}

/** Runs a MULTI and throws its first error (exec() reports them per command). */
export async function execAll(multi: ChainableCommander): Promise<void> {
  for (const [err] of (await multi.exec()) ?? []) if (err) throw err;
}

/** The distinct keys of key ids, to declare to a script. */
function declaredKeys(ids: string[]): Buffer[] {
  return [...new Set(ids)].map((id) => parseKeyId(id).key);
}

/** Copies keys and replays the log over them; a resync and a repair say which keys and from where. */
export abstract class CopyRun {
  protected readonly markers = new Markers();
  protected readonly copier: Copier;
  protected readonly log: Logger;
  protected readonly started = Date.now();
  protected readonly scanCount: number;
  protected readonly progress: CopyProgress = { phase: 'copy', copied: 0, total: 0, replayed: 0, seconds: 0 };
  protected readonly master: Redis;
  protected readonly replica: Redis;
  protected readonly keys: QueueKeys;
  private recopies = 0;
  private skipped = 0;

  constructor(
    protected readonly ctx: RunContext,
    protected readonly options: CopyRunOptions,
    /** 'resync' or 'repair', in messages */
    protected readonly what: string,
    protected readonly fail: Fail,
  ) {
    ({ master: this.master, replica: this.replica, keys: this.keys } = ctx);
    this.scanCount = options.scanCount ?? COPY_DEFAULTS.scanCount;
    this.log = (options.logger ?? createLogger('silent')).child({ queue: ctx.keys.queue, [what]: true });
    this.copier = new Copier(
      ctx.master,
      ctx.replica,
      ctx.keys,
      ctx.queueDb,
      fail,
      {
        bigMembers: options.bigMembers ?? COPY_DEFAULTS.bigMembers,
        bigBytes: options.bigBytes ?? COPY_DEFAULTS.bigBytes,
        chunk: options.chunk ?? COPY_DEFAULTS.chunk,
      },
      ctx.declareKeys,
    );
  }

  /** Copies keys given by id, and sets their markers. */
  protected async copyIds(ids: string[]): Promise<void> {
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

  /**
   * Replays the log after entry `from` (time `ts`) with the marker rule until
   * past every marker and the master's sequence, hands the replica back to the
   * consumer at the last entry replayed, and returns the result. `partial`:
   * the first `done` commands of entry `seq` are on the replica already.
   */
  protected async finish(from: number, ts: number, partial?: { seq: number; done: number }): Promise<CopyRunResult> {
    this.report('replay');
    const last = await this.replay(from, ts, partial);
    await this.copier.settle();
    // The history replayed must still be the master's (no restart since).
    const [seqNow, epochNow] = await this.master.hmget(this.keys.meta, 'seq', 'epoch');
    this.copier.check(Number(seqNow ?? 0), epochNow ?? '');
    this.checkLease();
    const watermark = ['seq', String(last.seq), ...(epochNow ? ['epoch', epochNow] : []), ...(last.ts ? ['ts', String(last.ts)] : [])];
    await execAll(
      this.replica
        .multi()
        .hset(this.keys.applied, ...watermark)
        .hdel(this.keys.applied, 'resyncing', 'part'),
    );
    this.report('done');
    const result = {
      seq: last.seq,
      copied: this.progress.copied,
      replayed: this.progress.replayed,
      skipped: this.skipped,
      recopies: this.recopies,
      seconds: (Date.now() - this.started) / 1000,
    };
    this.log.info(result, `${this.what}: done; the consumer goes on from here`);
    return result;
  }

  private async replay(from: number, ts0: number, partial?: { seq: number; done: number }): Promise<{ seq: number; ts: number }> {
    const follower = new LogFollower(this.master, this.keys, from, this.fail);
    let done = { seq: from, ts: ts0 };
    // Commands to run, in order, sent to the replica in one call once there are enough.
    let queued: Replayed[] = [];
    let queuedArgs = 0;
    const flush = async (): Promise<void> => {
      while (queued.length > 0) {
        const batch = queued;
        queued = [];
        queuedArgs = 0;
        const args = batch.flatMap((r) => [String(r.db), String(r.view.length), ...r.view.map(String), String(r.cmd.length), ...r.cmd]);
        const declared = this.ctx.declareKeys ? declaredKeys(batch.flatMap((r) => r.ids)) : [];
        const [code, at, err] = await this.replica.qsyncResyncReplay(
          1 + declared.length,
          this.keys.applied,
          ...declared,
          this.ctx.queueDb,
          done.seq,
          done.ts,
          ...args,
        );
        if (code === ReplyCode.ok) continue;
        if (code !== ReplyCode.keyLost)
          throw this.fail(`the replica refused a replayed command (${at} of the batch ending after entry ${done.seq}): ${err}`);
        // The commands before it ran. A key its command needs expired on the
        // replica first: copying its keys again puts the command in the copies.
        await this.copyAgain(batch[at - 1].ids);
        for (const r of batch.slice(at)) await consider(r);
      }
    };
    // Skips a command already in its keys' copies, copies its keys again when
    // only some of them are, or queues it.
    const consider = async (r: Replayed): Promise<void> => {
      const ahead = this.markers.ahead(r.ids, r.seq);
      if (ahead > 0 && ahead < r.ids.length) {
        // Keys copied at different times: copy them all again, past this entry.
        await flush();
        await this.copyAgain(r.ids);
      } else if (ahead > 0) {
        this.skipped++;
      } else {
        queued.push(r);
        queuedArgs += r.cmd.length + r.view.length + 3;
      }
    };
    const replayEntry = async (e: Entry) => {
      const first = e.seq === partial?.seq ? partial.done : 0;
      for (let i = first; i < e.commands.length; i++) {
        const cmd = e.commands[i];
        await consider({ db: e.db, cmd, view: e.views?.[i] ?? [], ids: touchedKeys(e.db, cmd, this.fail), seq: e.seq });
      }
      done = { seq: e.seq, ts: e.ts };
      this.progress.replayed++;
      if (queuedArgs >= REPLAY_ARGS) {
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

  /** Copies keys again, past the command being replayed, which is then in their copies. */
  private async copyAgain(ids: string[]): Promise<void> {
    if (++this.recopies > (this.options.maxRecopies ?? COPY_DEFAULTS.maxRecopies))
      throw this.fail(
        `keys kept changing under multi-key commands or expiring on the replica (${this.recopies - 1} copies again); run it again when writes are calmer`,
      );
    await this.copyIds(ids);
    this.skipped++;
  }

  protected masterSeq = async (): Promise<number> => Number((await this.master.hget(this.keys.meta, 'seq')) ?? 0);

  /** Between steps: stop if asked to, or if the lease may have run out. */
  protected checkLease(): void {
    if (this.options.signal?.aborted) throw this.fail(`interrupted; the replica stays marked, run the ${this.what} again`);
    if (!this.ctx.lease.valid()) throw this.fail(`lost the consumer lease; run it again`);
  }

  protected count(n: number): void {
    this.progress.copied += n;
    this.report(this.progress.phase);
  }

  protected report(phase: CopyProgress['phase']): void {
    this.progress.phase = phase;
    this.progress.seconds = (Date.now() - this.started) / 1000;
    this.options.onProgress?.({ ...this.progress });
  }
}
