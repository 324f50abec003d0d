/**
 * `qsync consume` on a Redis Cluster: when the master given is a cluster
 * node, its queue (one per hash slot) is drained by a ClusterConsumer, a
 * worker per source shard, to the replica given (a cluster or a standalone
 * server), until SIGTERM or SIGINT.
 */
import type { RedisOptions } from 'ioredis';
import { isClusterNode } from '../../shared/cluster-detect.js';
import { redactUrl } from '../../shared/config.js';
import { ConfigError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { ClusterConsumer, type ClusterConsumerOptions } from '../cluster/consumer.js';
import { clusterMetrics } from '../metrics/cluster.js';
import { serveMetrics, type MetricsServer } from '../metrics/metrics.js';

export interface Sides {
  master: RedisOptions;
  replica: RedisOptions;
  masterUrl: string;
  replicaUrl: string;
}

/**
 * Whether the pair is drained as a cluster: the master is a cluster node.
 * A standalone master with a cluster replica is refused: its one queue
 * cannot be applied slot by slot.
 */
export async function isClusterPair(sides: Sides, timeoutMs: number): Promise<boolean> {
  const [master, replica] = await Promise.all([
    isClusterNode(sides.master, timeoutMs, 'master', redactUrl(sides.masterUrl)),
    isClusterNode(sides.replica, timeoutMs, 'replica', redactUrl(sides.replicaUrl)),
  ]);
  if (!master && replica) throw standaloneToCluster(sides.masterUrl, sides.replicaUrl);
  return master;
}

/** The refusal of a standalone master with a cluster replica (consume, resync, repair). */
export function standaloneToCluster(masterUrl: string, replicaUrl: string): ConfigError {
  return new ConfigError(
    `qsync: --replica ${redactUrl(replicaUrl)} is a Redis Cluster node but --master ${redactUrl(masterUrl)} is a standalone server: a standalone queue cannot be applied to a cluster; use a cluster as the master too, or a standalone replica`,
  );
}

/** Drains the cluster until SIGTERM or SIGINT. */
export async function consumeCluster(
  sides: Sides,
  options: Omit<ClusterConsumerOptions, 'master' | 'replica' | 'logger'>,
  log: Logger,
  metricsPort?: number,
): Promise<void> {
  log.info({ master: redactUrl(sides.masterUrl), replica: redactUrl(sides.replicaUrl), ...options }, 'qsync consumer starting (Redis Cluster)');
  const consumer = new ClusterConsumer({ ...options, master: sides.master, replica: sides.replica, logger: log });
  await consumer.start();
  const metrics = metricsPort === undefined ? undefined : await startClusterMetrics(consumer, sides.master, options, metricsPort, log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping: finishing the batches in flight');
      void consumer.close().then(() => resolve());
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await metrics?.close();
  log.info({ applied: consumer.applied }, 'stopped');
}

/** Serves the cluster consumer's metrics (metrics/cluster.ts) on /metrics. */
async function startClusterMetrics(
  consumer: ClusterConsumer,
  master: RedisOptions,
  o: { prefix?: string; queue?: string; name?: string },
  port: number,
  log: Logger,
): Promise<{ close(): Promise<void> }> {
  const metrics = clusterMetrics(consumer, master, o);
  let server: MetricsServer;
  try {
    server = await serveMetrics(metrics.registry, port);
  } catch (err) {
    metrics.close();
    throw new ConfigError(`qsync: cannot serve metrics on --metrics-port ${port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  log.info({ port: server.port }, 'metrics on /metrics');
  return {
    close: async () => {
      await server.close();
      metrics.close();
    },
  };
}
