/** `qsync limit`: show or set the cap on what a queue holds on the master, and what writes to a full queue do. */
import type { Command } from 'commander';
import { nameOption } from '../../shared/config.js';
import { ExitCode } from '../../shared/errors.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE, QueueKeys } from '../../shared/keys.js';
import { formatLimits, limitChange, readUsage, setLimits, DEFAULT_MAX_DIRTY, type LimitFlags } from '../queue/limits.js';
import { common, open, queueOption, setExitCode, type CommonOpts } from './options.js';
import { refuseCluster } from './cluster.js';

/** `qsync limit`: checks the flags before connecting, applies the change (if any) and prints the limits in force. */
async function limit(o: CommonOpts & LimitFlags): Promise<number> {
  const keys = new QueueKeys(nameOption(o.prefix, '--prefix', DEFAULT_PREFIX), nameOption(o.queue, '--queue', DEFAULT_QUEUE));
  const change = limitChange(o);
  await refuseCluster(o, 'limit', "a cluster's queue is one per hash slot, each with its own cap");
  const master = await open(o, 'master');
  try {
    const changes = Object.values(change).some((v) => v !== undefined && v !== false);
    process.stdout.write(`${formatLimits(keys, changes ? await setLimits(master, keys, change) : await readUsage(master, keys))}\n`);
    return ExitCode.ok;
  } finally {
    master.disconnect();
  }
}

export function limitCommand(program: Command): void {
  common(program.command('limit'))
    .description('show or set the cap on what the queue holds on the master, and what writes to a full queue do')
    .addOption(queueOption())
    .option('--max-entries <n>', 'most entries queued (0: no cap)')
    .option('--max-bytes <size>', 'most bytes of entries queued: 67108864, 64mb, 1gb (0: no cap)')
    .option(
      '--policy <policy>',
      'writes to a full queue: reject (QueueFullError), mark-dirty (run unqueued, keys recorded) or detach-slowest (detach the replica furthest behind)',
    )
    .option('--max-dirty <n>', `mark-dirty: most keys recorded before a full resync is needed (default ${DEFAULT_MAX_DIRTY})`)
    .option('--clear', 'remove every cap')
    .option('--clear-repair', 'once the replica is repaired: forget the dirty keys and queue writes again')
    .action(async (o: CommonOpts & LimitFlags) => {
      setExitCode(await limit(o));
    });
}
