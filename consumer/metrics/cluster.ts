/**
 * Prometheus metrics of a consumer draining a Redis Cluster: the queue's
 * figures per source shard and in total, read at scrape time from every
 * source master (cluster/status.ts: one pipeline per master), and this
 * consumer's own view of the shards (the state of each, standby for the
 * shards another consumer holds) and entries applied, per shard and in total.
 * The totals keep the standalone series' names (`qsync_queue_depth`,
 * `qsync_dead_letters`, `qsync_entries_applied_total`, `qsync_state`), so
 * that dashboards and alerts serve both; the per-shard series carry a
 * `shard` label (the source master's node ID).
 */
import type { RedisOptions } from 'ioredis';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE } from '../../shared/keys.js';
import type { ClusterConsumer } from '../cluster/consumer.js';
import { openCluster, type ClusterSide } from '../cluster/shard-map.js';
import { readClusterStatus, type ClusterQueueStatus } from '../cluster/status.js';

const STATES = ['starting', 'standby', 'streaming', 'idle', 'backing-off', 'halted', 'resync-needed', 'replica-promoted', 'stopped'];

export interface ClusterMetrics {
  registry: Registry;
  /** closes the connections the scrapes read the source with */
  close(): void;
}

/** The metrics of `consumer`, whose source cluster `source` reaches (any node), for its queue and replica name (defaults as the consumer's). */
export function clusterMetrics(
  consumer: ClusterConsumer,
  source: RedisOptions,
  o: { prefix?: string; queue?: string; name?: string } = {},
): ClusterMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const { prefix = DEFAULT_PREFIX, queue = DEFAULT_QUEUE, name = DEFAULT_NAME } = o;
  if (name !== DEFAULT_NAME) registry.setDefaultLabels({ replica: name });
  const errors = new Counter({ name: 'qsync_errors_total', help: 'errors by kind', labelNames: ['queue', 'kind'], registers: [registry] });

  // One read of every source master per scrape, shared by the gauges. The
  // masters' connections are kept between scrapes and opened again after a
  // failure (a master gone, a slot moved: the shards are read anew).
  let side: Promise<ClusterSide> | undefined;
  let pending: { at: number; status: Promise<ClusterQueueStatus | undefined> } | undefined;
  const read = async (): Promise<ClusterQueueStatus> => {
    side ??= openCluster(source, 'master', `${source.host}:${source.port}`);
    try {
      return await readClusterStatus(await side, prefix, queue, name);
    } catch (err) {
      const failed = side;
      side = undefined;
      void failed.then(
        (s) => s.close(),
        () => {},
      );
      throw err;
    }
  };
  const snapshot = (): Promise<ClusterQueueStatus | undefined> => {
    if (!pending || Date.now() - pending.at > 500) {
      const status = read().catch(() => {
        errors.inc({ queue, kind: 'metrics-master-unreachable' });
        return undefined;
      });
      pending = { at: Date.now(), status };
    }
    return pending.status;
  };

  const total = (name: string, help: string, value: (s: ClusterQueueStatus) => number) => {
    const gauge: Gauge<'queue'> = new Gauge({
      name,
      help,
      labelNames: ['queue'],
      registers: [registry],
      async collect() {
        const s = await snapshot();
        if (s) gauge.set({ queue }, value(s));
      },
    });
  };
  const perShard = (name: string, help: string, value: (s: ClusterQueueStatus['shards'][number]) => number) => {
    const gauge: Gauge<'queue' | 'shard'> = new Gauge({
      name,
      help,
      labelNames: ['queue', 'shard'],
      registers: [registry],
      async collect() {
        const s = await snapshot();
        if (!s) return;
        gauge.reset();
        for (const shard of s.shards) gauge.set({ queue, shard: shard.node }, value(shard));
      },
    });
  };
  total('qsync_queue_depth', "entries waiting in the source's logs, every hash slot's", (s) => s.depth);
  total('qsync_dead_letters', 'entries parked in the dead-letter lists, every hash slot', (s) => s.deadLetters);
  total('qsync_busy_slots', 'hash slots whose log holds entries', (s) => s.busySlots);
  perShard('qsync_shard_queue_depth', 'entries waiting in the logs of the slots a source master owns', (s) => s.depth);
  perShard('qsync_shard_busy_slots', 'slots of a source master whose log holds entries', (s) => s.busySlots);
  perShard('qsync_shard_dead_letters', 'dead letters of the slots a source master owns', (s) => s.deadLetters);
  perShard(
    'qsync_shard_troubled_slots',
    'slots of a source master the consumer holding it reports halted or resync-needed',
    (s) => s.troubleSlots.length,
  );

  const shardState: Gauge<'queue' | 'shard' | 'state'> = new Gauge({
    name: 'qsync_shard_state',
    help: "1 for the state of each source shard as this consumer sees it (its workers' states; standby for a shard another consumer holds)",
    labelNames: ['queue', 'shard', 'state'],
    registers: [registry],
    collect() {
      shardState.reset();
      for (const s of consumer.shards) for (const name of STATES) shardState.set({ queue, shard: s.id, state: name }, name === s.state ? 1 : 0);
    },
  });
  const state: Gauge<'queue' | 'state'> = new Gauge({
    name: 'qsync_state',
    help: "1 for the consumer's state: the worst of its shards'",
    labelNames: ['queue', 'state'],
    registers: [registry],
    collect() {
      for (const name of STATES) state.set({ queue, state: name }, name === consumer.state ? 1 : 0);
    },
  });
  // From the consumer's own count, set at scrape time: a shard worker counts what it applied since it took the shard.
  const applied: Counter<'queue'> = new Counter({
    name: 'qsync_entries_applied_total',
    help: 'entries applied to the replica by this consumer',
    labelNames: ['queue'],
    registers: [registry],
    collect() {
      applied.reset();
      applied.inc({ queue }, consumer.applied);
    },
  });
  const shardApplied: Counter<'queue' | 'shard'> = new Counter({
    name: 'qsync_shard_entries_applied_total',
    help: 'entries of a source shard applied to the replica by this consumer since it took the shard',
    labelNames: ['queue', 'shard'],
    registers: [registry],
    collect() {
      shardApplied.reset();
      for (const s of consumer.shards) shardApplied.inc({ queue, shard: s.id }, s.applied);
    },
  });

  return {
    registry,
    close: () => {
      void side?.then(
        (s) => s.close(),
        () => {},
      );
      side = undefined;
    },
  };
}
