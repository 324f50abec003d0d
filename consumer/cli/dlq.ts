/** `qsync dlq list|retry|drop`: the dead letters a consumer run with --on-error park set aside. */
import { Option, type Command } from 'commander';
import type { Redis } from 'ioredis';
import { intOption, queueDbOption } from '../../shared/config.js';
import { ConfigError, ExitCode } from '../../shared/errors.js';
import type { QueueKeys } from '../../shared/keys.js';
import { dropDeadLetters, formatDeadLetters, listDeadLetters, retryDeadLetters, type Selection } from '../dead-letters/dlq.js';
import { common, open, openPair, queueOption, required, setExitCode, type CommonOpts } from './options.js';
import { replicaKeys, replicaNameOption } from './replicas.js';
import { clusterDlq } from './cluster.js';

type DlqOpts = CommonOpts & { replica?: string; seq?: string; all?: boolean; garbage?: boolean; json?: boolean; slot?: string };

/** Exactly one of --seq N, --all (and --garbage for drop). */
function selection(o: DlqOpts, command: string, garbage: boolean): Selection {
  const given = [o.seq !== undefined, o.all === true, o.garbage === true].filter(Boolean).length;
  if (given !== 1) throw new ConfigError(`qsync: dlq ${command} needs one of --seq N, --all${garbage ? ', --garbage' : ''}`);
  if (o.seq !== undefined) return { seq: intOption(o.seq, '--seq', 0, 1) };
  return o.all ? { all: true } : { garbage: true };
}

/** Runs a dlq command against the master (and the replica for retry, checked as a pair), closing them after. */
async function dlq(o: DlqOpts, run: (keys: QueueKeys, master: Redis, replica?: Redis) => Promise<number>, replica = false): Promise<number> {
  const keys = replicaKeys(o);
  if (replica) required(o.replica, '--replica', 'QSYNC_REPLICA');
  const cluster = await clusterDlq(o, keys, run, replica);
  if (cluster !== undefined) return cluster;
  const pair = replica ? await openPair(o) : undefined;
  const master = pair?.master ?? (await open(o, 'master'));
  try {
    return await run(keys, master, pair?.replica);
  } finally {
    if (pair) pair.close();
    else master.disconnect();
  }
}

/** `--slot <n>`: on a Redis Cluster, the hash slot whose dead letters a command acts on. */
const slotOption = (cmd: Command) =>
  cmd.option('--slot <n>', 'Redis Cluster: the hash slot whose dead letters these are (qsync status shows the slots with dead letters)');

export function dlqCommands(program: Command): void {
  const group = program.command('dlq').description('dead letters: entries a consumer run with --on-error park set aside');
  const pick = (cmd: Command) => cmd.option('--seq <n>', 'the dead letter of this entry').option('--all', 'every dead letter');

  slotOption(common(group.command('list')))
    .description('show the dead letters: seq, age, db, commands, error, when parked')
    .addOption(queueOption())
    .addOption(replicaNameOption('the replica whose dead letters these are'))
    .option('--json', 'print JSON')
    .action(async (o: DlqOpts) => {
      setExitCode(
        await dlq(o, async (keys, master) => {
          const views = await listDeadLetters(master, keys);
          process.stdout.write(`${o.json ? JSON.stringify(views, null, 2) : formatDeadLetters(views, keys.dlq)}\n`);
          return ExitCode.ok;
        }),
      );
    });

  pick(slotOption(common(group.command('retry'))))
    .description('apply dead letters on the replica now (after the commands already applied) and remove those that applied')
    .addOption(new Option('--replica <url>', 'replica URL, redis://, rediss:// or redis+sentinel://').env('QSYNC_REPLICA'))
    .addOption(queueOption())
    .addOption(replicaNameOption('the replica whose dead letters these are'))
    .action(async (o: DlqOpts) => {
      const which = selection(o, 'retry', false);
      setExitCode(
        await dlq(
          o,
          async (keys, master, replica) => {
            const results = await retryDeadLetters(master, replica!, keys, queueDbOption(o.queueDb, '--queue-db'), which);
            for (const r of results) (r.applied ? process.stdout : process.stderr).write(`${r.applied ? '' : 'qsync: '}${r.message}\n`);
            if (results.length === 0) process.stdout.write(`no dead letters in ${keys.dlq}\n`);
            return results.every((r) => r.applied) ? ExitCode.ok : ExitCode.refused;
          },
          true,
        ),
      );
    });

  pick(slotOption(common(group.command('drop'))))
    .description('remove dead letters without applying them')
    .addOption(queueOption())
    .addOption(replicaNameOption('the replica whose dead letters these are'))
    .option('--garbage', 'every dead letter that is not a qsync entry')
    .action(async (o: DlqOpts) => {
      const which = selection(o, 'drop', true);
      setExitCode(
        await dlq(o, async (keys, master) => {
          process.stdout.write(`dropped ${await dropDeadLetters(master, keys, which)} dead letters from ${keys.dlq}\n`);
          return ExitCode.ok;
        }),
      );
    });
}
