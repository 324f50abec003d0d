/**
 * ClusterConsumer: drains a Redis Cluster's queue (one queue per hash slot)
 * to a target that is a cluster of any shape or a standalone server, with a
 * worker per source master (consumer/cluster/shard-worker.ts).
 *
 * It follows the source's topology (every few seconds, and at once when a
 * worker meets a slot that moved): a slot resharded to another master is
 * drained by that master's worker, a master that failed over to its cluster
 * replica gets a worker on the promoted node, with no restart. Each source
 * shard has its own lease; the consumer runs workers for the shards it
 * holds. Nothing is applied twice wherever a slot goes: the target's
 * watermark of each slot is checked and moved by the apply script itself.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { Cluster, type Redis, type RedisOptions } from 'ioredis';
import { clusterQueueKey } from '../../shared/cluster.js';
import { isClusterNode } from '../../shared/cluster-detect.js';
import { OWN_CONNECTION } from '../../shared/config.js';
import { ConfigError } from '../../shared/errors.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { defineScripts } from '../../shared/scripts.js';
import { closeConnections, connect } from '../drain/connections.js';
import { withDefaults } from '../drain/options.js';
import type { WorkerOptions, WorkerState } from '../drain/worker.js';
import { ShardLeases } from './leases.js';
import { ShardWorker, type ShardStatus } from './shard-worker.js';
import { readTopology, type SourceShard } from './topology.js';

/** How often the source's topology is read again when nothing asked for it sooner. */
const TOPOLOGY_MS = 2000;

export type ClusterConsumerOptions = Omit<WorkerOptions, 'relay' | 'keepApplied' | 'queueDb'> & {
  /** the queue db: a cluster has db 0 only. @default 0 */
  queueDb?: number;
};

/** A source shard as the consumer reports it: its worker's status, or standby when another consumer holds it. */
export interface ShardState extends ShardStatus {
  id: string;
}

/** Redis options for the nodes of a cluster reached at `options` (credentials, TLS; host and port come from the cluster). */
function nodeOptions(options: RedisOptions, name: string): RedisOptions {
  const { host: _host, port: _port, db: _db, ...rest } = options;
  return { ...rest, ...OWN_CONNECTION, connectionName: name };
}

/** An ioredis Cluster client of the cluster reached at `options`, qsync's scripts defined. */
function clusterClient(options: RedisOptions, name: string): Cluster {
  const client = new Cluster([{ host: options.host ?? '127.0.0.1', port: options.port ?? 6379 }], {
    redisOptions: nodeOptions(options, name),
    scaleReads: 'master',
    retryDelayOnTryAgain: 50,
    retryDelayOnMoved: 0,
    maxRedirections: 32,
    slotsRefreshTimeout: 2000,
  });
  client.on('error', () => {});
  defineScripts(client);
  return client;
}

export class ClusterConsumer extends EventEmitter {
  readonly id: string;
  private readonly opts: Required<Omit<ClusterConsumerOptions, 'logger' | 'id' | 'backoff'>> & Pick<ClusterConsumerOptions, 'backoff'>;
  private readonly log: Logger;
  private source?: Cluster;
  private target?: Redis | Cluster;
  private leases?: ShardLeases;
  private readonly workers = new Map<string, ShardWorker>();
  /** the source's masters as last read */
  private topology: SourceShard[] = [];
  private held = new Set<string>();
  private timer?: NodeJS.Timeout;
  private ticking?: Promise<void>;
  private lastTopologyAt = 0;
  private topologyWanted = false;
  private appliedBefore = 0;
  private closing?: Promise<void>;

  constructor(options: ClusterConsumerOptions) {
    super();
    this.opts = { ...withDefaults(options), queueDb: options.queueDb ?? 0, master: options.master, replica: options.replica };
    if (this.opts.queueDb !== 0)
      throw new ConfigError(`qsync: queue db ${this.opts.queueDb} cannot be used with a Redis Cluster (a cluster has db 0 only)`);
    this.id = options.id ?? randomUUID();
    this.log = (options.logger ?? createLogger()).child({ queue: this.opts.queue, consumer: this.id });
  }

  /** Connects to both sides, reads the source's shards and starts a worker for each one this consumer holds. */
  async start(): Promise<this> {
    const { master, replica, timeoutMs, queue } = this.opts;
    const [sourceIsCluster, targetIsCluster] = await Promise.all([
      isClusterNode(master, timeoutMs, 'master'),
      isClusterNode(replica, timeoutMs, 'replica'),
    ]);
    if (!sourceIsCluster)
      throw new ConfigError(
        `qsync: the master ${master.host ?? '127.0.0.1'}:${master.port ?? 6379} is not a Redis Cluster node; drain it with a SyncWorker`,
      );
    this.source = clusterClient(master, `qsync:${queue}:cluster`);
    this.target = targetIsCluster
      ? clusterClient(replica, `qsync:${queue}:replica`)
      : connect({ ...replica, db: 0 }, { backoff: this.opts.backoff, commandTimeoutMs: timeoutMs }, `qsync:${queue}:replica`);
    const { prefix, name, leaseMs } = this.opts;
    this.leases = new ShardLeases(this.source, { prefix, queue, name, consumerId: this.id, leaseMs, logger: this.log });
    this.log.info({ target: targetIsCluster ? 'cluster' : 'standalone' }, 'draining a Redis Cluster, a worker per source shard');
    await this.tick();
    this.timer = setInterval(() => void this.tick(), Math.max(100, Math.min(TOPOLOGY_MS, Math.floor(this.opts.leaseMs / 3))));
    return this;
  }

  /** Entries applied since this consumer started, by every shard worker. */
  get applied(): number {
    let n = this.appliedBefore;
    for (const w of this.workers.values()) n += w.applied;
    return n;
  }

  /** The state of every source shard: its worker's, or standby for one another consumer drains. */
  get shards(): ShardState[] {
    return this.topology.map((s) => {
      const w = this.workers.get(s.id);
      if (w) return { id: s.id, ...w.status() };
      return { id: s.id, state: 'standby', node: `${s.host}:${s.port}`, slots: s.slots.length, busySlots: 0, applied: 0, since: Date.now() };
    });
  }

  /** The whole consumer's state: the worst of its shards' (halted, resync-needed, backing-off), else streaming or idle. */
  get state(): WorkerState {
    // A slot in trouble is its shard's worst state.
    const states = new Set(
      this.shards.flatMap((s) => [s.state, ...Object.values((s.detail?.slots ?? {}) as Record<string, { state: WorkerState }>).map((t) => t.state)]),
    );
    for (const worst of ['halted', 'resync-needed', 'replica-promoted', 'backing-off', 'streaming', 'idle', 'starting'] as const) {
      if (states.has(worst)) return worst;
    }
    return this.closing ? 'stopped' : 'standby';
  }

  /** Reads the topology when due or asked for, balances the shard leases, runs a worker per held shard. */
  private tick(): Promise<void> {
    this.ticking ??= this.reconcile()
      .catch((err: Error) => {
        this.log.warn({ err: err.message }, 'cannot read the source cluster or renew the shard leases now; retrying');
        // A shard whose lease ran out meanwhile is another consumer's to take.
        return this.stopWorkers((id) => !this.leases?.holds(id));
      })
      .finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async reconcile(): Promise<void> {
    if (this.closing || !this.source || !this.leases) return;
    if (this.topologyWanted || Date.now() - this.lastTopologyAt >= TOPOLOGY_MS || this.topology.length === 0) {
      this.topologyWanted = false;
      this.topology = await readTopology(this.source);
      this.lastTopologyAt = Date.now();
    }
    this.held = await this.leases.balance(this.topology.map((s) => s.id));
    if (this.closing) return;
    for (const [id, worker] of this.workers) {
      const shard = this.topology.find((s) => s.id === id);
      if (shard && this.held.has(id)) worker.setSlots(shard.slots);
    }
    const stopped = this.stopWorkers((id) => !this.held.has(id) || !this.topology.some((s) => s.id === id));
    for (const shard of this.topology) if (this.held.has(shard.id) && !this.workers.has(shard.id)) this.startWorker(shard);
    await this.publish();
    await stopped;
  }

  /** Stops the workers of the shards `which` picks; each finishes its batch in flight. */
  private async stopWorkers(which: (id: string) => boolean): Promise<void> {
    const stopping: Promise<void>[] = [];
    for (const [id, worker] of this.workers) {
      if (!which(id)) continue;
      const gone = !this.topology.some((s) => s.id === id);
      this.log.info(
        { shard: id, node: worker.node },
        gone ? 'shard gone from the source (failed over or emptied): its worker stops' : 'shard lease not held: its worker stops',
      );
      this.workers.delete(id);
      this.appliedBefore += worker.applied;
      stopping.push(worker.close());
    }
    await Promise.all(stopping);
  }

  private startWorker(shard: SourceShard): void {
    const { prefix, queue, name, batchSize, batchBytes, window, leaseMs, timeoutMs, recheckMs, onError } = this.opts;
    const worker = new ShardWorker({ ...shard, slots: [...shard.slots] }, this.opts.master, this.target!, {
      prefix,
      queue,
      name,
      batchSize,
      batchBytes,
      window,
      leaseMs,
      timeoutMs,
      recheckMs,
      onError,
      backoff: this.opts.backoff ?? {},
      token: this.id,
      log: this.log,
      onMoved: () => {
        this.topologyWanted = true;
        void this.tick();
      },
    });
    worker.on('applied', (a) => this.emit('applied', { shard: shard.id, ...a }));
    worker.on('state', (state: WorkerState, reason?: string) => {
      this.emit('state', { shard: shard.id, state, reason });
      void this.publish();
    });
    worker.on('slot-state', (s) => this.emit('slot-state', { shard: shard.id, ...s }));
    this.workers.set(shard.id, worker);
    this.log.info({ shard: shard.id, node: worker.node, slots: shard.slots.length }, 'shard worker starts');
    worker.start();
  }

  /** Writes each held shard's status in the cluster's `shard-status` hash (best effort). */
  private async publish(): Promise<void> {
    if (!this.source || this.workers.size === 0) return;
    const key = clusterQueueKey(this.opts.prefix, this.opts.queue, 'shard-status', this.opts.name);
    const fields = [...this.workers].flatMap(([id, w]) => [id, JSON.stringify({ ...w.status(), consumer: this.id })]);
    await this.source.hset(key, ...fields).catch(() => {});
  }

  /** Stops every shard worker (each finishes its batch in flight), releases the leases and disconnects. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.timer);
      await this.ticking;
      await this.publish();
      const workers = [...this.workers.values()];
      await Promise.all(workers.map((w) => w.close()));
      await this.publish();
      try {
        await this.leases?.close();
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'could not release the shard leases; they expire by themselves');
      }
      await closeConnections([this.source, this.target].filter((c) => c !== undefined));
    })();
    return this.closing;
  }
}
