/**
 * Whether a server is a Redis Cluster node: the one question the consumer
 * and the operator commands ask before they pick a cluster's way of reading
 * a queue (one queue per hash slot) or a standalone server's.
 */
import type { RedisOptions } from 'ioredis';
import { describeTarget } from './config.js';
import { probe } from './probe.js';

/**
 * Asks the server once, on a short-lived connection, whether it runs with
 * `cluster-enabled yes` (`INFO cluster`: `cluster_enabled:1`). A server that
 * cannot be reached fails as probe() reports it (unreachable, credentials,
 * TLS, Redis older than 7).
 */
export async function isClusterNode(options: RedisOptions, timeoutMs: number, what = 'server', where = describeTarget(options)): Promise<boolean> {
  // A cluster node has db 0 only: the question is asked there.
  const client = await probe({ ...options, db: 0 }, what, where, timeoutMs);
  try {
    return /^cluster_enabled:1\b/m.test(await client.info('cluster'));
  } finally {
    client.disconnect();
  }
}
