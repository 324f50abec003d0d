/** `qsync replicas [detach]`: the replicas one log feeds, and detaching one so that the log no longer waits for it. */
import { Option, type Command } from 'commander';
import { nameOption } from '../../shared/config.js';
import { ConfigError, ExitCode } from '../../shared/errors.js';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE, QueueKeys } from '../../shared/keys.js';
import { detachReplica, formatReplicas, listReplicas } from '../replicas/replicas.js';
import { common, open, queueOption, setExitCode, type CommonOpts } from './options.js';
import { refuseCluster } from './cluster.js';

/** Why replicas and replicas detach refuse a Redis Cluster node. */
const CLUSTER_REPLICAS = "a cluster's queue is one per hash slot, each with its own replicas";

type ReplicasOpts = CommonOpts & { name?: string; json?: boolean };

/** `--name <name>`: which of the replicas the log feeds, with its environment variable and default. */
export function replicaNameOption(description = 'the replica, among those the log feeds'): Option {
  return new Option('--name <name>', description).env('QSYNC_NAME').default(DEFAULT_NAME);
}

/** The queue's keys for the replica given by --name. */
export function replicaKeys(o: CommonOpts & { name?: string }): QueueKeys {
  return new QueueKeys(
    nameOption(o.prefix, '--prefix', DEFAULT_PREFIX),
    nameOption(o.queue, '--queue', DEFAULT_QUEUE),
    nameOption(o.name, '--name', DEFAULT_NAME),
  );
}

export function replicasCommand(program: Command): void {
  const group = common(program.command('replicas'))
    .description('list the replicas the log feeds: name, position, lag, consumer and heartbeat')
    .addOption(queueOption())
    .option('--json', 'print JSON')
    .action(async (o: ReplicasOpts) => {
      const keys = replicaKeys(o);
      await refuseCluster(o, 'replicas', CLUSTER_REPLICAS);
      const master = await open(o, 'master');
      try {
        const views = await listReplicas(master, keys);
        process.stdout.write(`${o.json ? JSON.stringify(views, null, 2) : formatReplicas(views, keys)}\n`);
        setExitCode(ExitCode.ok);
      } finally {
        master.disconnect();
      }
    });

  common(group.command('detach'))
    .description('detach a replica: the log no longer waits for it, and it needs qsync resync --name')
    .addOption(queueOption())
    .addOption(new Option('--name <name>', 'the replica to detach').env('QSYNC_NAME'))
    .action(async (_local: ReplicasOpts, cmd: Command) => {
      // Flags given after `detach` that `replicas` also takes are parsed by it.
      const o = cmd.optsWithGlobals<ReplicasOpts>();
      if (o.name === undefined) throw new ConfigError('qsync: replicas detach needs --name (or QSYNC_NAME)');
      const keys = replicaKeys(o);
      await refuseCluster(o, 'replicas detach', CLUSTER_REPLICAS);
      const master = await open(o, 'master');
      try {
        if (!(await detachReplica(master, keys, keys.name)))
          throw new ConfigError(`qsync: replica '${keys.name}' is not attached to queue ${keys.queue}`);
        process.stdout.write(`detached replica ${keys.name} from queue ${keys.queue}; rebuild it with qsync resync --name ${keys.name}\n`);
        setExitCode(ExitCode.ok);
      } finally {
        master.disconnect();
      }
    });
}
