/** `qsync jobs`: the control jobs of a queue (state, progress, result) and their schedules. */
import type { Command } from 'commander';
import { ExitCode } from '../../shared/errors.js';
import { jobsPrefix } from '../../shared/keys.js';
import { controlQueue } from '../jobs/runner.js';
import { formatJobs, listJobs } from '../jobs/view.js';
import { replicaNameOption } from './replicas.js';
import { refuseCluster } from './cluster.js';
import { common, open, queueOption, queuePlace, setExitCode, sideOptions, type CommonOpts, type QueuePlace } from './options.js';

/** The control jobs' queue on a checked master. */
export async function openQueue(o: CommonOpts & { replica?: string }, where: QueuePlace) {
  const master = sideOptions(o, 'master');
  (await open(o, 'master')).disconnect();
  return controlQueue({ master, ...where });
}

async function jobs(o: CommonOpts & { json?: boolean }): Promise<number> {
  const where = queuePlace(o);
  await refuseCluster(o, 'jobs', "control jobs run inside a standalone queue's consumer", ['master']);
  const queue = await openQueue(o, where);
  try {
    const list = await listJobs(queue);
    process.stdout.write(`${o.json ? JSON.stringify(list, null, 2) : formatJobs(`${jobsPrefix(where.prefix)}:${where.queue}`, list)}\n`);
    return ExitCode.ok;
  } finally {
    await queue.close();
  }
}

export function jobsCommand(program: Command): void {
  common(program.command('jobs'))
    .description('list the control jobs of a queue (state, progress, result) and their schedules')
    .addOption(queueOption())
    .addOption(replicaNameOption('the replica whose consumers run the jobs (each replica has its own)'))
    .option('--json', 'print JSON')
    .action(async (o: CommonOpts & { json?: boolean }) => {
      setExitCode(await jobs(o));
    });
}
