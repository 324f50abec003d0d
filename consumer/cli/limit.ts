/**
 * `qsync limit`: show or set the cap on what a queue holds on the master, and
 * what writes to a full queue do; on a Redis Cluster, the cap of every hash
 * slot's queue.
 */
import type { Command } from 'commander';
import { nameOption, redactUrl } from '../../shared/config.js';
import { ClusterModeError, ExitCode } from '../../shared/errors.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE, QueueKeys } from '../../shared/keys.js';
import { formatClusterLimits, readClusterUsage, setClusterLimits } from '../cluster/limits.js';
import {
  changesLimits,
  formatLimits,
  limitChange,
  readUsage,
  setLimits,
  DEFAULT_MAX_DIRTY,
  type LimitChange,
  type LimitFlags,
} from '../queue/limits.js';
import { common, open, queueOption, setExitCode, type CommonOpts } from './options.js';
import { isCluster, openClusterSide } from './cluster.js';

/** `qsync limit`: checks the flags before connecting, applies the change (if any) and prints the limits in force. */
async function limit(o: CommonOpts & LimitFlags): Promise<number> {
  const keys = new QueueKeys(nameOption(o.prefix, '--prefix', DEFAULT_PREFIX), nameOption(o.queue, '--queue', DEFAULT_QUEUE));
  const change = limitChange(o);
  if (await isCluster(o, 'master')) return clusterLimit(o, keys, change);
  const master = await open(o, 'master');
  try {
    process.stdout.write(`${formatLimits(keys, changesLimits(change) ? await setLimits(master, keys, change) : await readUsage(master, keys))}\n`);
    return ExitCode.ok;
  } finally {
    master.disconnect();
  }
}

/**
 * `qsync limit` on a Redis Cluster: the change in every hash slot's queue,
 * then the cap per slot and the usage per master and in total.
 * detach-slowest is refused: it detaches a replica of the replicas registry,
 * which a cluster does not have.
 */
async function clusterLimit(o: CommonOpts, keys: QueueKeys, change: LimitChange): Promise<number> {
  if (change.policy === 'detach-slowest') {
    throw new ClusterModeError(
      `qsync: limit --policy detach-slowest does not work on a Redis Cluster (--master ${redactUrl(o.master!)} is a cluster node): it detaches a replica of the replicas registry, which a cluster does not have; nothing changed`,
    );
  }
  const side = await openClusterSide(o, 'master');
  try {
    if (changesLimits(change)) await setClusterLimits(side, keys.prefix, keys.queue, change);
    process.stdout.write(`${formatClusterLimits(await readClusterUsage(side, keys.prefix, keys.queue))}\n`);
    return ExitCode.ok;
  } finally {
    side.close();
  }
}

export function limitCommand(program: Command): void {
  common(program.command('limit'))
    .description(
      "show or set the cap on what the queue holds on the master, and what writes to a full queue do; on a Redis Cluster the cap is per hash slot: each slot's queue has it (no cap on the cluster as a whole)",
    )
    .addOption(queueOption())
    .option('--max-entries <n>', 'most entries queued (per hash slot on a Redis Cluster; 0: no cap)')
    .option('--max-bytes <size>', 'most bytes of entries queued (per hash slot on a Redis Cluster): 67108864, 64mb, 1gb (0: no cap)')
    .option(
      '--policy <policy>',
      'writes to a full queue: reject (QueueFullError), mark-dirty (run unqueued, keys recorded) or detach-slowest (detach the replica furthest behind; not on a Redis Cluster)',
    )
    .option(
      '--max-dirty <n>',
      `mark-dirty: most keys recorded before a full resync is needed (per hash slot on a Redis Cluster; default ${DEFAULT_MAX_DIRTY})`,
    )
    .option('--clear', 'remove every cap')
    .option(
      '--clear-repair',
      'once the replica is repaired: forget the dirty keys and queue writes again (on a Redis Cluster: in every slot that needs it)',
    )
    .action(async (o: CommonOpts & LimitFlags) => {
      setExitCode(await limit(o));
    });
}
