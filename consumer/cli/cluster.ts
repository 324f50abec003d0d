/**
 * The operator commands on a Redis Cluster: a side given as any node's URL is
 * found to be a cluster node (INFO cluster) and read shard by shard. `status`
 * and `verify` serve clusters, `resync` and `repair` run slot by slot
 * (copy-cluster.ts), `limit` sets the cap of every slot's queue (limit.ts);
 * `dlq` acts on one hash slot's dead letters (--slot);
 * every other command, which acts on one queue's keys, refuses a cluster
 * (whose queue is one per hash slot) rather than act on a single node
 * (refuseCluster).
 */
import type { Redis } from 'ioredis';
import { intOption, redactUrl, queueDbOption, nameOption } from '../../shared/config.js';
import { slotKeys, SLOTS } from '../../shared/cluster.js';
import { isClusterNode } from '../../shared/cluster-detect.js';
import { ClusterModeError, ConfigError } from '../../shared/errors.js';
import { DEFAULT_NAME, DEFAULT_QUEUE, type QueueKeys } from '../../shared/keys.js';
import { clusterQueueDb, openCluster, type ClusterSide } from '../cluster/shard-map.js';
import { clusterStates, formatClusterStatus, readClusterStatus } from '../cluster/status.js';
import { open, sideOptions, type CommonOpts } from './options.js';

const DETECT_TIMEOUT_MS = 5000;

type SideOpts = CommonOpts & { replica?: string };

/** Whether the server --master (or --replica) names is a Redis Cluster node. */
export function isCluster(o: SideOpts, side: 'master' | 'replica'): Promise<boolean> {
  return isClusterNode(sideOptions(o, side), DETECT_TIMEOUT_MS, side, redactUrl(o[side]!));
}

/** Every master of the cluster --master or --replica reaches; the queue db must be 0, a cluster's only db. */
export function openClusterSide(o: SideOpts, side: 'master' | 'replica'): Promise<ClusterSide> {
  clusterQueueDb(queueDbOption(o.queueDb, '--queue-db'), '--queue-db', `--${side} ${redactUrl(o[side]!)}`);
  return openCluster(sideOptions(o, side), side, redactUrl(o[side]!));
}

interface OpenSide {
  side: Redis | ClusterSide;
  close(): void;
}

/** A side as it is: every master of a cluster, or one checked connection to a standalone server. */
async function openSide(o: SideOpts, side: 'master' | 'replica', cluster: boolean): Promise<OpenSide> {
  if (cluster) {
    const c = await openClusterSide(o, side);
    return { side: c, close: () => c.close() };
  }
  const client = await open(o, side);
  return { side: client, close: () => client.disconnect() };
}

/**
 * The source and the target of a command that reads both, when either is a
 * Redis Cluster; undefined when neither is. Two clusters must be two: one
 * that shares a master with the other is the same cluster.
 */
export async function openClusterPair(o: SideOpts): Promise<{ source: Redis | ClusterSide; target: Redis | ClusterSide; close(): void } | undefined> {
  const [sourceIsCluster, targetIsCluster] = await Promise.all([isCluster(o, 'master'), isCluster(o, 'replica')]);
  if (!sourceIsCluster && !targetIsCluster) return undefined;
  const source = await openSide(o, 'master', sourceIsCluster);
  let target: OpenSide | undefined;
  try {
    target = await openSide(o, 'replica', targetIsCluster);
    const ids = new Set('shards' in source.side ? source.side.shards.map((s) => s.id) : []);
    const shared = 'shards' in target.side ? target.side.shards.find((s) => ids.has(s.id)) : undefined;
    if (shared) {
      throw new ConfigError(
        `qsync: --master ${redactUrl(o.master!)} and --replica ${redactUrl(o.replica!)} are the same Redis Cluster (both have node ${shared.id.slice(0, 12)}); the replica must be another cluster or server`,
      );
    }
  } catch (err) {
    source.close();
    target?.close();
    throw err;
  }
  return {
    source: source.side,
    target: target.side,
    close: () => {
      source.close();
      target.close();
    },
  };
}

/**
 * Refuses a command that serves standalone queues only, when --master or
 * --replica (those given, of `sides`) is a Redis Cluster node: one line
 * naming the command and the node, exit code 13, before anything changes.
 */
export async function refuseCluster(
  o: SideOpts,
  command: string,
  why: string,
  sides: ('master' | 'replica')[] = ['master', 'replica'],
): Promise<void> {
  for (const side of sides) {
    if (o[side] === undefined || !(await isCluster(o, side))) continue;
    throw new ClusterModeError(
      `qsync: ${command} does not work on a Redis Cluster yet (--${side} ${redactUrl(o[side]!)} is a cluster node): ${why}; nothing changed`,
    );
  }
}

/**
 * `qsync status` of a queue on a Redis Cluster (--queue, or the default
 * queue: a cluster's queues are not searched for), printed; the states it
 * holds, for the exit code. Undefined when --master is not a cluster node.
 */
export async function clusterStatus(o: SideOpts & { json?: boolean }, prefix: string, queue: string | undefined): Promise<string[] | undefined> {
  if (!(await isCluster(o, 'master'))) {
    if (o.replica)
      throw new ConfigError(`qsync: status reads --replica only for a Redis Cluster; --master ${redactUrl(o.master!)} is a standalone server`);
    return undefined;
  }
  const name = nameOption(o.name, '--name', DEFAULT_NAME);
  const source = await openClusterSide(o, 'master');
  let target: OpenSide | undefined;
  try {
    if (o.replica) target = await openSide(o, 'replica', await isCluster(o, 'replica'));
    const row = await readClusterStatus(source, prefix, queue ?? DEFAULT_QUEUE, name, target?.side);
    process.stdout.write(`${o.json ? JSON.stringify([row], null, 2) : formatClusterStatus([row])}\n`);
    return [row.state, ...clusterStates(row)];
  } finally {
    source.close();
    target?.close();
  }
}

/** What a dlq command does with one queue's keys, its master and (for retry) its replica. */
type DlqRun = (keys: QueueKeys, master: Redis, replica?: Redis) => Promise<number>;

/**
 * `qsync dlq` on a Redis Cluster, whose dead letters are kept per hash slot:
 * the queue of the slot --slot names, on the source master that owns it (and
 * for retry, on the target server that owns it). Undefined when --master is
 * not a cluster node.
 */
export async function clusterDlq(o: SideOpts & { slot?: string }, keys: QueueKeys, run: DlqRun, withReplica: boolean): Promise<number | undefined> {
  if (!(await isCluster(o, 'master'))) {
    if (o.slot !== undefined) throw new ConfigError(`qsync: --slot is for a Redis Cluster; --master ${redactUrl(o.master!)} is a standalone server`);
    return undefined;
  }
  if (o.slot === undefined) {
    throw new ConfigError(
      `qsync: --master ${redactUrl(o.master!)} is a Redis Cluster node, whose dead letters are kept per hash slot: give --slot N (qsync status shows each shard's slots with dead letters)`,
    );
  }
  const slot = intOption(o.slot, '--slot', 0, 0, SLOTS - 1);
  const source = await openClusterSide(o, 'master');
  let target: OpenSide | undefined;
  try {
    const owner = source.ownerOf(slot);
    if (!owner) throw new ConfigError(`qsync: no master of the cluster --master ${redactUrl(o.master!)} reaches serves hash slot ${slot}`);
    if (withReplica) target = await openSide(o, 'replica', await isCluster(o, 'replica'));
    const replica = target && ('shards' in target.side ? target.side.ownerOf(slot)?.client : target.side);
    if (target && !replica)
      throw new ConfigError(`qsync: no master of the cluster --replica ${redactUrl(o.replica!)} reaches serves hash slot ${slot}`);
    return await run(slotKeys(keys.prefix, keys.queue, slot, keys.name), owner.client, replica);
  } finally {
    source.close();
    target?.close();
  }
}
