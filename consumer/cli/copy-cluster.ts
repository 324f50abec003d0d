/**
 * `qsync resync` and `qsync repair` when --master is a Redis Cluster node
 * (consumer/cluster/resync.ts, repair.ts): every hash slot's queue on its
 * own, onto a cluster target of any shape or a standalone server. Redis's
 * full sync copies a whole server, not a slot, and control jobs run inside a
 * standalone consumer: --method replication and --job are refused.
 */
import { redactUrl } from '../../shared/config.js';
import { ConfigError, ExitCode } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { CopyProgress } from '../copy/run.js';
import type { ClusterCopyOptions, ClusterCopyResult } from '../cluster/copy.js';
import { repairCluster, type ClusterRepairResult } from '../cluster/repair.js';
import { resyncCluster } from '../cluster/resync.js';
import { isCluster, openClusterPair } from './cluster.js';
import { standaloneToCluster } from './consume-cluster.js';
import type { CommonOpts } from './options.js';

type What = 'resync' | 'repair';

type Flags = CommonOpts & { replica?: string; job?: boolean };

/** What the run takes besides its sides, progress and logger. */
type Settings = Omit<ClusterCopyOptions, 'source' | 'target' | 'logger' | 'onProgress'> & { method?: string };

/**
 * Runs the resync or repair on a cluster source and returns its exit code;
 * undefined when neither side is a cluster node (the standalone command).
 */
export async function copyOnCluster(
  what: What,
  o: Flags,
  s: Settings,
  log: Logger,
  progress: { update(p: CopyProgress): void; stop(): void },
): Promise<number | undefined> {
  const [source, target] = await Promise.all([isCluster(o, 'master'), o.replica === undefined ? false : isCluster(o, 'replica')]);
  if (!source && !target) return undefined;
  if (!source) throw standaloneToCluster(o.master!, o.replica!);
  if (o.job)
    throw new ConfigError(
      `qsync: --job runs the ${what} inside a standalone queue's consumer; --master ${redactUrl(o.master!)} is a Redis Cluster node: stop the cluster consumer and run the ${what} without --job`,
    );
  if (s.method === 'replication')
    throw new ConfigError(
      `qsync: --method replication cannot serve a Redis Cluster (--master ${redactUrl(o.master!)}): Redis's full sync copies a whole server, a cluster's queue is one per hash slot; use --method copy`,
    );
  const pair = await openClusterPair(o);
  if (!pair || !('shards' in pair.source)) throw new Error('unreachable: the source was found to be a cluster node');
  const { method: _method, ...settings } = s;
  log.info({ master: redactUrl(o.master!), replica: redactUrl(o.replica!), ...settings }, `${what} starting (Redis Cluster, slot by slot)`);
  try {
    const options: ClusterCopyOptions = { ...settings, source: pair.source, target: pair.target, logger: log, onProgress: (p) => progress.update(p) };
    const result = what === 'resync' ? await resyncCluster(options) : await repairCluster(options);
    progress.stop();
    process.stdout.write(`${what}: ${describe(what, result)}\n`);
    return (result as Partial<ClusterRepairResult>).dirtyAgain ? ExitCode.repairNeeded : ExitCode.ok;
  } finally {
    progress.stop();
    pair.close();
  }
}

/** One line: the slots' figures summed, and each shard's. */
function describe(what: What, r: ClusterCopyResult): string {
  const repair = what === 'repair' ? (r as ClusterRepairResult) : undefined;
  if (repair && !repair.repaired) return 'no dirty keys in any hash slot; nothing to repair';
  const copied = repair ? `copied ${r.copied} keys (${repair.dirtyKeys} dirty)` : `copied ${r.copied} keys`;
  const shards = r.shards.map((s) => `${s.address} ${s.slots} slots, ${s.copied} keys`).join('; ');
  const again = repair?.dirtyAgain ? '; writes went unqueued again meanwhile: run the repair again' : '';
  return `${copied}, replayed ${r.replayed} entries in ${r.seconds.toFixed(1)} s, ${r.slots} hash slots (${shards}); each slot's consumer goes on from its last entry${again}`;
}
