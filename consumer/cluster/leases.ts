/**
 * Shard leases of a cluster queue: several consumer processes share the
 * source's shards (one lease per source master), each holding its fair share,
 * and take over the shards of one that stopped renewing.
 *
 * Every consumer heartbeats in the `consumers` registry and, in the same
 * script on the source (shared/lua/shard-leases-2.lua), takes, renews or gives
 * up leases in the `shards` hash against the server's clock. As with the
 * standalone lease, a lease only decides who drains a shard: exactly-once
 * apply rests on the target's per-slot watermarks, so two consumers racing on
 * a shard during a handover cannot apply an entry twice.
 */
import type { Cluster } from 'ioredis';
import { clusterQueueKey } from '../../shared/cluster.js';
import { ConfigError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { defineScripts } from '../../shared/scripts.js';
import { heldUntil } from '../drain/lease.js';

/** A consumer that stopped heartbeating leaves the registry this many lease times after it expired. */
const FORGET_AFTER_LEASES = 10;

export interface ShardLeasesOptions {
  /** prefix of qsync's keys */
  prefix: string;
  /** queue name */
  queue: string;
  /** replica name */
  name: string;
  /** this consumer's id, unique among the queue's consumers (a lease reads `<consumer id> <expiry ms>`) */
  consumerId: string;
  /** how long a lease and a heartbeat last without renewal (ms) */
  leaseMs: number;
  logger: Logger;
}

export class ShardLeases {
  private readonly consumersKey: string;
  private readonly shardsKey: string;
  private held = new Set<string>();
  private validUntil = 0;
  private pending: Promise<unknown> = Promise.resolve();
  private closing?: Promise<void>;

  constructor(
    private readonly source: Cluster,
    private readonly opts: ShardLeasesOptions,
  ) {
    if (!Number.isInteger(opts.leaseMs) || opts.leaseMs <= 0) throw new ConfigError(`lease time ${opts.leaseMs} is not a positive number of ms`);
    if (typeof opts.consumerId !== 'string' || opts.consumerId === '')
      throw new ConfigError(`consumer id ${JSON.stringify(opts.consumerId)} is not a non-empty string`);
    this.consumersKey = clusterQueueKey(opts.prefix, opts.queue, 'consumers', opts.name);
    this.shardsKey = clusterQueueKey(opts.prefix, opts.queue, 'shards', opts.name);
    defineScripts(source);
  }

  /**
   * Heartbeats this consumer and takes, renews or gives up shard leases so
   * that it holds its fair share of `shardIds` (the source's master node ids
   * now). Returns the ids this consumer holds, each valid until the next call
   * at the latest (holds() says for how long).
   */
  balance(shardIds: string[]): Promise<Set<string>> {
    const bad = shardIds.find((id) => typeof id !== 'string' || id === '' || /\s/.test(id));
    if (bad !== undefined) return Promise.reject(new ConfigError(`shard id "${bad}" is not a cluster node id`));
    const run = this.pending.then(() => this.renew([...new Set(shardIds)]));
    this.pending = run.catch(() => undefined);
    return run;
  }

  /** True while this consumer surely holds the lease of shard `shardId`. */
  holds(shardId: string): boolean {
    return this.held.has(shardId) && Date.now() < this.validUntil;
  }

  /** Gives up every lease this consumer holds and leaves the registry: its shards are free at once. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.pending.then(async () => {
      this.held = new Set();
      this.validUntil = 0;
      const released = await this.source.qsyncShardLeasesRelease(this.consumersKey, this.shardsKey, this.opts.consumerId);
      this.opts.logger.info({ released }, 'shard leases released');
    });
    return this.closing;
  }

  private async renew(shardIds: string[]): Promise<Set<string>> {
    if (this.closing) return new Set();
    const { consumerId, leaseMs, logger } = this.opts;
    const sentAt = Date.now();
    const [, live, share, ...held] = await this.source.qsyncShardLeases(
      this.consumersKey,
      this.shardsKey,
      consumerId,
      leaseMs,
      leaseMs * FORGET_AFTER_LEASES,
      ...shardIds,
    );
    const now = new Set(held.map(String));
    const taken = [...now].filter((id) => !this.held.has(id));
    const released = [...this.held].filter((id) => !now.has(id));
    if (taken.length || released.length) logger.info({ taken, released, held: [...now], consumers: live, share }, 'shard leases changed');
    this.held = now;
    this.validUntil = heldUntil(sentAt, leaseMs);
    return new Set(now);
  }
}
