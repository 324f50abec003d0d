/**
 * Resync: rebuilds the replica from a copy of the master while writers keep
 * writing, then hands over to the consumer at a log entry from which it can
 * go on exactly once. Two methods: Redis's own full sync when the replica
 * server can reach the master (copy/native-sync.ts: the master forks), or
 * qsync's copy (below: no fork on the master, bounded memory here);
 * 'auto' tries the first and falls back to the second.
 *
 * The copy:
 * 1. Under the consumer lease (nothing is applied meanwhile), S0 = the
 *    master's seq, read as the replica is attached to the log after it
 *    (shared/lua/attach-2.lua: the log keeps what comes after, whatever the
 *    other replicas confirm); the replica is flushed and marked `resyncing`
 *    in one step (a worker treats that mark as resync-needed).
 * 2. Every key is copied (copy/copier.ts) as it was after some
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
import { ownKeyPrefixes } from '../../shared/keys.js';
import type { Entry } from '../../shared/entry.js';
import { CopyRun, execAll, withRunContext, type CopyProgress, type CopyRunOptions, type CopyRunResult } from './run.js';
import { LogFollower, resyncFailure } from './log-follower.js';
import { checkReplicaServer, NativeSync, REPLICATION_TIMEOUT_MS, ReplicationUnavailable, type ResyncMethod } from './native-sync.js';

export { ResyncError } from './log-follower.js';
export { RESYNC_METHODS, type ResyncMethod } from './native-sync.js';

export type ResyncProgress = CopyProgress;
export interface ResyncOptions extends CopyRunOptions {
  /**
   * 'replication': REPLICAOF the master on the replica server and take over
   * the copy at the sequence it carries; 'copy': qsync copies key by key;
   * 'auto': replication, or the copy when the replica server cannot sync
   * from the master. @default 'copy'
   */
  method?: ResyncMethod;
  /** how long the replica server may go without a link to the master or a sync under way. @default 10000 */
  replicationTimeoutMs?: number;
}
export interface ResyncResult extends CopyRunResult {
  /** how the data was copied */
  method: 'replication' | 'copy';
}

/** Copies the master's data to the replica and leaves it ready for the consumer. */
export function runResync(options: ResyncOptions): Promise<ResyncResult> {
  return withRunContext(options, 'resync', resyncFailure, (ctx) => new Resync(ctx, options, 'resync', resyncFailure).run());
}

/**
 * The copy (steps 1 to 4 above); how the replica is cleared and where the
 * keys are found are for each kind of queue to say: here a standalone
 * master's dbs, SCANned, and a replica FLUSHALLed.
 */
export class CopyResync extends CopyRun {
  /** qsync copies every key and replays the log written meanwhile. */
  async byCopy(): Promise<CopyRunResult> {
    const [, seq, epoch, ts] = await this.master.qsyncAttach(this.keys.meta, this.keys.log, this.keys.name, 'tail', 0);
    const s0 = Number(seq || 0);
    this.copier.start(s0, epoch || '');
    await this.master.hset(this.keys.status, 'state', 'resyncing', 'stateSince', Date.now(), 'detail', JSON.stringify({ from: s0 }));
    await this.clearReplica(JSON.stringify({ kind: 'resync', from: s0, startedAt: Date.now() }));
    this.log.info({ from: s0 }, 'resync: replica flushed; copying');
    const follower = new LogFollower(this.master, this.keys, s0);
    const touch = (e: Entry) => this.markers.touch(e);
    await this.copyEveryKey(follower, touch);
    // A key the scan missed was absent at some point of it: deleted or renamed
    // (then touched by an entry up to now), or created later (absent at S0 too).
    await follower.readTo(await this.masterSeq(), touch);
    // Keys touched during the scan but not copied since: copy them now.
    this.progress.phase = 'recopy';
    const stale = this.markers.stale();
    for (let i = 0; i < stale.length; i += this.scanCount) await this.copyIds(stale.slice(i, i + this.scanCount));
    return this.finish(s0, Number(ts || 0));
  }

  /** Empties the replica and marks it `resyncing` (`mark`), in one step: a replica is never empty without the mark. */
  protected async clearReplica(mark: string): Promise<void> {
    await execAll(this.replica.multi().flushall().hset(this.keys.applied, 'resyncing', mark));
  }

  /** Copies every key of the master once, reading the log as it goes (scanDb). */
  protected async copyEveryKey(follower: LogFollower, touch: (e: Entry) => void): Promise<void> {
    for (const db of await this.keyspace()) await this.scanDb(db, follower, touch);
  }

  /** Copies a batch of keys found on the master, then reads the log up to the latest copy, so that keys touched meanwhile get markers. */
  protected async copyFound(db: number, batch: Buffer[], follower: LogFollower, touch: (e: Entry) => void): Promise<void> {
    const copied = await this.copier.copy(db, batch);
    await follower.readTo(Math.max(...copied.map((c) => c.seq)), touch);
    this.markers.copied(db, copied);
    this.count(copied.length);
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
    const { scanner, queueDb } = this.ctx;
    await scanner.select(db);
    const own = ownKeyPrefixes(this.keys.prefix);
    const scan = (cursor: string) => {
      const reply = scanner.scanBuffer(cursor, 'COUNT', this.scanCount);
      reply.catch(() => {}); // awaited below; a failure meanwhile must not go unhandled
      return reply;
    };
    // The next SCAN runs on its own connection while this batch is copied.
    let pending = scan('0');
    let cursor: string;
    do {
      this.checkLease();
      const [next, found] = await pending;
      cursor = next.toString();
      if (cursor !== '0') pending = scan(cursor);
      // qsync's own keys (log, meta, lease, control jobs...) stay on the master.
      const batch = db === queueDb ? found.filter((k) => !own.some((o) => k.toString('latin1').startsWith(o))) : found;
      if (batch.length > 0) await this.copyFound(db, batch, follower, touch);
    } while (cursor !== '0');
  }
}

class Resync extends CopyResync {
  declare protected readonly options: ResyncOptions;

  async run(): Promise<ResyncResult> {
    const method = this.options.method ?? 'copy';
    // A Redis replica of this master, left by a resync by replication that was killed: it would keep following the master.
    if (await checkReplicaServer(this.ctx, this.options.master, this.options.replica)) await this.replica.replicaof('NO', 'ONE');
    if (method !== 'copy') {
      try {
        return await this.byReplication();
      } catch (err) {
        if (!(err instanceof ReplicationUnavailable)) throw err;
        if (method === 'replication') throw this.fail(`${err.message}; the replica stays marked: run it again, or with --method copy`);
        this.log.warn({ reason: err.message }, `resync: ${err.message}; copying key by key instead`);
      }
    }
    return { ...(await this.byCopy()), method: 'copy' };
  }

  /** Redis's full sync copies the data; qsync takes over at the sequence it carries. */
  private async byReplication(): Promise<ResyncResult> {
    const info = await this.master.info('keyspace');
    for (const m of info.matchAll(/^db\d+:keys=(\d+)/gm)) this.progress.total += Number(m[1]);
    this.report('copy');
    await this.master.hset(this.keys.status, 'state', 'resyncing', 'stateSince', Date.now(), 'detail', JSON.stringify({ method: 'replication' }));
    const sync = new NativeSync(this.ctx, {
      master: this.options.master,
      timeoutMs: this.options.replicationTimeoutMs ?? REPLICATION_TIMEOUT_MS,
      fail: this.fail,
      check: () => this.checkLease(),
      // An estimate from the master's key count, for the progress bar and log lines.
      onLoading: (share) => this.count(Math.floor(share * this.progress.total) - this.progress.copied),
      log: this.log,
    });
    this.log.info('resync: the replica server syncs from the master (REPLICAOF)');
    const { seq, copied } = await sync.run(JSON.stringify({ kind: 'resync', method: 'replication', startedAt: Date.now() }));
    this.count(copied - this.progress.copied);
    this.report('done');
    const result = { seq, copied, replayed: 0, skipped: 0, recopies: 0, seconds: (Date.now() - this.started) / 1000, method: 'replication' as const };
    this.log.info(result, 'resync: done; the consumer goes on from here');
    return result;
  }
}
