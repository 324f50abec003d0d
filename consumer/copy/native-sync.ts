/**
 * Resync by Redis's own full synchronisation, for a replica server that can
 * reach the master: the master forks and streams an RDB, as for any new
 * Redis replica, instead of qsync copying key by key.
 *
 * 1. Under the consumer lease, the replica is attached to the log after the
 *    master's sequence S0 (attach-2.lua), so that the log keeps every entry
 *    after it, and marked `resyncing`.
 * 2. REPLICAOF the master (with the master URL's user and password as
 *    masteruser and masterauth, tls-replication for a rediss:// master, the
 *    node a Sentinel group resolved to), replica-read-only on meanwhile so
 *    that nothing else writes to it, until the sync is done (INFO
 *    replication: link up, no sync in progress).
 * 3. REPLICAOF NO ONE and the mark again, sent together: the data is the
 *    master's as it was after some entry S1 >= S0, and the master's meta
 *    hash copied with it says which (the log's sequence travels inside the
 *    snapshot, consistent with the data, as every write and its entry are
 *    one atomic step on the master).
 * 4. In one step on the replica: the copied keys of qsync (log, meta, leases,
 *    control jobs...: the master's) are deleted, the watermark is set to S1
 *    and the mark removed. The consumer goes on after S1 exactly once; the
 *    entries S0+1..S1 the log kept are skipped as below the watermark.
 * The replica's configuration is restored as it was. A replica that never
 * starts syncing within the timeout (the master unreachable from it, its
 * credentials or rights refused) is detached again: ReplicationUnavailable.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis, RedisOptions } from 'ioredis';
import { describeTarget, isSentinel } from '../../shared/config.js';
import { ConfigError } from '../../shared/errors.js';
import { ownKeyPrefixes } from '../../shared/keys.js';
import { assertDistinct, connectedNode, infoFields } from '../../shared/probe.js';
import { execAll, type RunContext } from './run.js';
import type { Fail } from './log-follower.js';
import type { Logger } from '../../shared/logger.js';

/** How a resync copies the data: Redis's full sync, qsync's copy, or the first and then the second if it cannot. */
export const RESYNC_METHODS = ['auto', 'replication', 'copy'] as const;
export type ResyncMethod = (typeof RESYNC_METHODS)[number];

/** Default of how long the replica may take to start syncing from the master. */
export const REPLICATION_TIMEOUT_MS = 10_000;

/** The replica server could not sync from the master; it was detached again and holds what it held (or an empty dataset). */
export class ReplicationUnavailable extends Error {}

/** How often the replica's INFO replication is read while it syncs. */
const POLL_MS = 20;
/** A transfer under way this long is one the master accepted. */
const TRANSFER_MS = 1000;
/** Keys deleted per UNLINK of the handover. */
const UNLINK_BATCH = 1000;

/** Where the replica server finds the master. */
interface Address {
  host: string;
  port: number;
}

/** The master's address as the replica server must dial it: the URL's, or the node a Sentinel group resolved to. */
function masterAddress(master: Redis, options: RedisOptions): Address {
  if (!isSentinel(options)) return { host: options.host ?? 'localhost', port: options.port ?? 6379 };
  const node = connectedNode(master);
  const m = node && /^\[?(.*?)\]?:(\d+)$/.exec(node);
  if (!m) throw new ReplicationUnavailable(`the master of ${describeTarget(options)} has no known address`);
  return { host: m[1], port: Number(m[2]) };
}

/**
 * Refuses the master itself as the replica, and a replica server that is
 * itself a Redis replica of another server: its data would keep following
 * that one. Returns whether it is a replica of this master (left by a
 * resync by replication that was killed).
 */
export async function checkReplicaServer(ctx: RunContext, masterOptions: RedisOptions, replicaOptions: RedisOptions): Promise<boolean> {
  await assertDistinct(ctx.master, ctx.replica, describeTarget(masterOptions), describeTarget(replicaOptions));
  const info = await infoFields(ctx.replica, 'replication').catch((err: Error) => {
    if (/NOPERM/.test(err.message)) return new Map<string, string>();
    throw err;
  });
  if (info.get('role') !== 'slave') return false;
  const upstream = `${info.get('master_host')}:${info.get('master_port')}`;
  const address = masterAddress(ctx.master, masterOptions);
  if (upstream !== `${address.host}:${address.port}`) {
    throw new ConfigError(
      `qsync: the replica server is itself a Redis replica of ${upstream} (REPLICAOF): its data follows that server; run REPLICAOF NO ONE on it first if it is to be rebuilt from ${describeTarget(masterOptions)}`,
    );
  }
  return true;
}

/** What the replica's data is at after the sync, and the keys of qsync it holds. */
export interface NativeSyncResult {
  seq: number;
  /** keys of the dataset on the replica after the handover */
  copied: number;
}

/** What a sync needs besides the connections. */
export interface NativeSyncOptions {
  /** the master's connection options: its address and credentials for the replica server */
  master: RedisOptions;
  /** how long the replica server may go without a sign of progress */
  timeoutMs: number;
  fail: Fail;
  /** between steps: throws when the run must stop */
  check: () => void;
  /** while the replica server loads the copy: the share loaded, 0 to 1 */
  onLoading: (share: number) => void;
  log: Logger;
}

export class NativeSync {
  private readonly replica: Redis;
  private readonly masterOptions: RedisOptions;
  private readonly timeoutMs: number;

  constructor(
    private readonly ctx: RunContext,
    private readonly opts: NativeSyncOptions,
  ) {
    this.replica = ctx.replica;
    this.masterOptions = opts.master;
    this.timeoutMs = opts.timeoutMs;
  }

  /**
   * Syncs the replica from the master and hands over at the copied seq.
   * `mark` is the resync mark written on the replica before and after the sync.
   */
  async run(mark: string): Promise<NativeSyncResult> {
    const { master, keys } = this.ctx;
    const address = masterAddress(master, this.masterOptions);
    const [, seq, epoch] = await master.qsyncAttach(keys.meta, keys.log, keys.name, 'tail', 0);
    const from = Number(seq || 0);
    await this.replica.hset(keys.applied, 'resyncing', mark);
    const saved = await this.configure();
    // Both in one write: once the replica is a master again it carries the
    // mark, which the copy from the master replaced.
    const detach = () => execAll(this.replica.pipeline().replicaof('NO', 'ONE').hset(keys.applied, 'resyncing', mark));
    try {
      await this.replica.replicaof(address.host, address.port);
      await this.untilSynced(address);
      await detach();
    } catch (err) {
      await detach().catch(() => {});
      throw err;
    } finally {
      await this.replica.config('SET', ...saved).catch(() => {});
    }
    this.opts.log.info({ from }, 'resync: the replica server holds the copy; handing over');
    return this.handover(from, epoch || '');
  }

  /**
   * Sets what the replica needs to dial the master, and replica-read-only;
   * returns the settings as they were, to be set back.
   */
  private async configure(): Promise<string[]> {
    const { username, password, tls } = this.masterOptions;
    const wanted: Record<string, string> = {
      masteruser: username ?? '',
      masterauth: password ?? '',
      'replica-read-only': 'yes',
    };
    const names = Object.keys(wanted);
    if (tls) names.push('tls-replication');
    let current: string[];
    try {
      current = (await this.replica.config('GET', ...names)) as string[];
    } catch (err) {
      throw new ReplicationUnavailable(`the replica's configuration cannot be read (${(err as Error).message})`);
    }
    const saved = new Map<string, string>();
    for (let i = 0; i < current.length; i += 2) saved.set(current[i], current[i + 1]);
    if (tls) {
      if (!saved.has('tls-replication')) throw new ReplicationUnavailable('the replica server has no TLS support, which a rediss:// master needs');
      wanted['tls-replication'] = 'yes';
    }
    try {
      await this.replica.config('SET', ...Object.entries(wanted).flat());
    } catch (err) {
      throw new ReplicationUnavailable(`the replica's configuration cannot be set (${(err as Error).message})`);
    }
    return [...saved].flat();
  }

  /**
   * Waits until the replica holds the master's dataset (link up, no sync in
   * progress). Fails if it goes `timeoutMs` without a sign of progress: bytes
   * of the copy read, the copy being loaded, or a transfer under way (the
   * master forking, or waiting for more replicas) for over a second; a
   * refused SYNC shows as a transfer for some milliseconds each retry.
   */
  private async untilSynced(address: Address): Promise<void> {
    let since = Date.now();
    let syncingSince = 0;
    let read = 0;
    for (;;) {
      this.opts.check();
      const info = await infoFields(this.replica, 'replication', 'persistence');
      const syncing = info.get('master_sync_in_progress') === '1';
      if (info.get('master_link_status') === 'up' && !syncing) return;
      const now = Date.now();
      syncingSince = syncing ? syncingSince || now : 0;
      const readNow = Number(info.get('master_sync_read_bytes') ?? 0);
      const loading = info.get('loading') === '1';
      if (loading) this.opts.onLoading(Number(info.get('loading_loaded_perc') ?? 0) / 100);
      if (readNow > read || loading || (syncingSince && now - syncingSince > TRANSFER_MS)) since = now;
      else if (now - since > this.timeoutMs)
        throw new ReplicationUnavailable(
          `the replica server did not sync from the master at ${address.host}:${address.port} within ${this.timeoutMs} ms (unreachable from the replica, or its user refused the replica's AUTH, PSYNC or REPLCONF)`,
        );
      read = readNow;
      await sleep(POLL_MS);
    }
  }

  /** Deletes the copied keys of qsync and sets the watermark at the copy's seq, in one step. */
  private async handover(from: number, epoch: string): Promise<NativeSyncResult> {
    const { keys, queueDb } = this.ctx;
    const [seqText, copiedEpoch, ts] = await this.replica.hmget(keys.meta, 'seq', 'epoch', 'ts');
    const seq = Number(seqText ?? 0);
    if (seq < from || (epoch && copiedEpoch !== epoch))
      throw this.opts.fail(
        `the copy is at entry ${seq} of epoch ${copiedEpoch ?? '(none)'}, but the replica was attached after entry ${from} of epoch ${epoch || '(none)'}: the master's sequence started over meanwhile; run it again`,
      );
    // One KEYS over the queue db (the replica serves no one else meanwhile, and
    // KEYS matches as it goes where SCAN gathers every key first): every own
    // prefix starts with the queue's prefix, which holds no glob characters.
    const prefixes = ownKeyPrefixes(keys.prefix);
    const own = (await this.replica.keys(`${keys.prefix}*`)).filter((k) => prefixes.some((p) => k.startsWith(p)));
    this.opts.check();
    const multi = this.replica.multi();
    for (let i = 0; i < own.length; i += UNLINK_BATCH) multi.unlink(...own.slice(i, i + UNLINK_BATCH));
    const watermark = ['seq', String(seq), ...(copiedEpoch ? ['epoch', copiedEpoch] : []), ...(ts ? ['ts', ts] : [])];
    await execAll(multi.hset(keys.applied, ...watermark));
    const keyspace = await infoFields(this.replica, 'keyspace');
    let copied = 0;
    for (const [db, text] of keyspace) copied += Number(/keys=(\d+)/.exec(text)?.[1] ?? 0) - (db === `db${queueDb}` ? 1 : 0);
    return { seq, copied };
  }
}
