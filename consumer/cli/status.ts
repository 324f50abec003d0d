/** `qsync status`: depth, lag, consumer and state of each queue; its exit code serves as a health check. */
import { Option, type Command } from 'commander';
import { nameOption } from '../../shared/config.js';
import { ExitCode } from '../../shared/errors.js';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE } from '../../shared/keys.js';
import { findQueues, formatStatus, readStatus, replicaNames } from '../queue/status.js';
import { common, open, setExitCode, type CommonOpts } from './options.js';
import { clusterStatus } from './cluster.js';

/** Exit code of `status`: the worst state among the queues (the consumers' and the queues' own), so that monitors can run it as a check. */
function statusExitCode(states: string[]): number {
  if (states.includes('halted')) return ExitCode.halted;
  if (states.includes('resync-needed')) return ExitCode.resyncNeeded;
  if (states.includes('replica-promoted')) return ExitCode.wrongRole;
  if (states.includes('repair-needed')) return ExitCode.repairNeeded;
  return ExitCode.ok;
}

async function status(o: CommonOpts & { replica?: string; json?: boolean }): Promise<number> {
  const prefix = nameOption(o.prefix, '--prefix', DEFAULT_PREFIX);
  const only = o.queue === undefined ? undefined : nameOption(o.queue, '--queue', DEFAULT_QUEUE);
  const cluster = await clusterStatus(o, prefix, only);
  if (cluster) return statusExitCode(cluster);
  const master = await open(o, 'master');
  try {
    const queues = only !== undefined ? [only] : await findQueues(master, prefix);
    const one = o.name === undefined ? undefined : nameOption(o.name, '--name', DEFAULT_NAME);
    const places = (
      await Promise.all(queues.map(async (q) => (one ? [one] : await replicaNames(master, prefix, q)).map((r) => [q, r] as const)))
    ).flat();
    const rows = await Promise.all(places.map(([q, r]) => readStatus(master, prefix, q, r)));
    process.stdout.write(`${o.json ? JSON.stringify(rows, null, 2) : formatStatus(rows)}\n`);
    return statusExitCode(rows.flatMap((r) => [r.state, r.queueState]));
  } finally {
    master.disconnect();
  }
}

export function statusCommand(program: Command): void {
  common(program.command('status'))
    .description('show depth, lag, consumer and state of each queue')
    .addOption(new Option('--queue <name>', 'only this queue (default: every queue found)').env('QSYNC_QUEUE'))
    .addOption(new Option('--name <name>', 'only this replica (default: every replica the log feeds)').env('QSYNC_NAME'))
    .addOption(
      new Option('--replica <url>', "Redis Cluster source only: the target, to show how far each slot's replica is behind").env('QSYNC_REPLICA'),
    )
    .option('--json', 'print JSON')
    .action(async (o) => {
      setExitCode(await status(o));
    });
}
