/** `qsync failover`, `qsync promote`, `qsync rejoin`: moving a queue's master role between servers (consumer/failover/). */
import { Option, type Command } from 'commander';
import type { Redis } from 'ioredis';
import { choiceOption, redactUrl } from '../../shared/config.js';
import { ExitCode, UnreachableError } from '../../shared/errors.js';
import { QueueKeys } from '../../shared/keys.js';
import { durationOption } from '../../shared/units.js';
import { abortFailover, runFailover } from '../failover/failover.js';
import { runPromote } from '../failover/promote.js';
import { runRejoin, TAIL_ACTIONS } from '../failover/rejoin.js';
import { common, open, queueOption, queuePlace, required, setExitCode, type CommonOpts } from './options.js';
import { refuseCluster } from './cluster.js';

/** Why failover, promote and rejoin refuse a Redis Cluster node. */
const CLUSTER_ROLES = "a Redis Cluster moves a shard's master role by its own failover (CLUSTER FAILOVER), which the cluster consumer follows";

type RoleOpts = CommonOpts & { replica?: string; timeoutMs?: string; tail?: string; json?: boolean; abort?: boolean };

/** How long failover waits for the replica by default. */
const FAILOVER_TIMEOUT_MS = 10_000;
/** How long promote tries to reach the old master, to fence it. */
const OLD_MASTER_TIMEOUT_MS = 2000;

const replicaOption = () => new Option('--replica <url>', 'replica URL, redis:// or rediss://').env('QSYNC_REPLICA');

/** Runs fn with the servers it needs open (each in the queue db), closing them after. */
async function withServers<T>(clients: Redis[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    for (const c of clients) c.disconnect();
  }
}

function print(o: RoleOpts, json: object, text: string[]): void {
  process.stdout.write(`${o.json ? JSON.stringify(json, null, 2) : text.join('\n')}\n`);
}

async function failover(o: RoleOpts): Promise<number> {
  required(o.master, '--master', 'QSYNC_MASTER');
  required(o.replica, '--replica', 'QSYNC_REPLICA');
  const timeoutMs = durationOption(o.timeoutMs, '--timeout-ms', FAILOVER_TIMEOUT_MS, { min: 1 });
  const { prefix, queue } = queuePlace(o);
  const [a, b] = [redactUrl(o.master!), redactUrl(o.replica!)];
  await refuseCluster(o, 'failover', CLUSTER_ROLES);
  const master = await open(o, 'master');
  const replica = await open(o, 'replica').catch((err: Error) => {
    master.disconnect();
    throw err;
  });
  const keys = new QueueKeys(prefix, queue);
  if (o.abort) {
    const taken = await withServers([master, replica], () => abortFailover({ master, replica, masterWhere: a, replicaWhere: b, keys }));
    print(o, { ...taken, master: a, replica: b }, [
      `queue '${queue}': the failover from ${a} to ${b} is taken back: ${[taken.unfencedMaster && `${a} takes writes again`, taken.unmarkedReplica && `${b} is a plain replica again`].filter(Boolean).join('; ')}`,
    ]);
    return ExitCode.ok;
  }
  const r = await withServers([master, replica], () => runFailover({ master, replica, masterWhere: a, replicaWhere: b, keys, timeoutMs }));
  print(o, { ...r, master: b, replica: a }, [
    `queue '${queue}': ${b} is the master now (its log's epoch ${r.epoch}), promoted at seq ${r.seq} of ${a}'s log (epoch ${r.fromEpoch})`,
    `${a} is fenced (writes to it fail, naming ${b}) and ready to be its replica, with no copy: qsync consume --master ${b} --replica ${a}`,
    `writes were refused for ${r.pauseMs} ms`,
  ]);
  return ExitCode.ok;
}

async function promote(o: RoleOpts): Promise<number> {
  required(o.replica, '--replica', 'QSYNC_REPLICA');
  const { prefix, queue } = queuePlace(o);
  const b = redactUrl(o.replica!);
  const a = o.master ? redactUrl(o.master) : '';
  await refuseCluster(o, 'promote', CLUSTER_ROLES, ['replica']);
  const replica = await open(o, 'replica');
  // The old master is fenced when it answers; an emergency promotion does not wait for it.
  let master: Redis | null = null;
  let unreachable = '';
  if (o.master) {
    try {
      const reached = await open(o, 'master', OLD_MASTER_TIMEOUT_MS);
      // Reached: it is fenced below, so it must not be a cluster node.
      await refuseCluster(o, 'promote', CLUSTER_ROLES, ['master']).catch((err) => {
        reached.disconnect();
        throw err;
      });
      master = reached;
    } catch (err) {
      if (!(err instanceof UnreachableError)) {
        replica.disconnect();
        throw err;
      }
      unreachable = err.message.replace(/^qsync: /, '');
    }
  }
  const r = await withServers(master ? [master, replica] : [replica], () =>
    runPromote({ replica, replicaWhere: b, master, masterWhere: a, keys: new QueueKeys(prefix, queue) }),
  );
  const from = a || 'its old master';
  print(o, { ...r, master: b, oldMaster: a || null }, [
    `queue '${queue}': ${b} is a master now (its log's epoch ${r.epoch}), promoted at seq ${r.atSeq} of ${from}'s log (epoch ${r.fromEpoch || 'none'})`,
    r.fencedOldMaster
      ? `${a} is fenced: writes to it fail, naming ${b}`
      : a
        ? `${a} was not fenced (${unreachable}): writes it still takes join its tail`
        : 'the old master was not given (--master): it was not fenced',
    `consumers of ${from} no longer apply anything to ${b}; when ${from} is back: qsync rejoin --master ${b} --replica ${a || '<old master>'}`,
    ...(r.pendingKeys > 0
      ? [`warning: ${r.pendingKeys} keys ${b} was waiting to copy from ${from} (they had expired on it first) may miss their last writes`]
      : []),
  ]);
  return ExitCode.ok;
}

async function rejoin(o: RoleOpts): Promise<number> {
  required(o.master, '--master', 'QSYNC_MASTER');
  required(o.replica, '--replica', 'QSYNC_REPLICA');
  const tail = choiceOption(o.tail, '--tail', TAIL_ACTIONS, 'park');
  const { prefix, queue, queueDb } = queuePlace(o);
  const [b, a] = [redactUrl(o.master!), redactUrl(o.replica!)];
  await refuseCluster(o, 'rejoin', CLUSTER_ROLES);
  const master = await open(o, 'master');
  const replica = await open(o, 'replica').catch((err: Error) => {
    master.disconnect();
    throw err;
  });
  const keys = new QueueKeys(prefix, queue);
  const r = await withServers([master, replica], () => runRejoin({ master, replica, masterWhere: b, replicaWhere: a, keys, queueDb, tail }));
  const settled =
    tail === 'park'
      ? `parked ${r.parked} on ${b} (qsync dlq list --master ${b})`
      : tail === 'apply'
        ? `applied ${r.applied} on ${b}${r.parked ? `, parked ${r.parked} it refused` : ''}`
        : `discarded ${r.discarded}`;
  print(o, r, [
    `queue '${queue}': ${a}'s tail after seq ${r.promotedAtSeq}: ${r.tailEntries} entries, ${r.tailKeys} keys; ${settled}`,
    `copied ${r.repairedKeys} keys from ${b}${r.pendingKeys ? ` (${r.pendingKeys} left for the consumer to copy)` : ''}; ${a} is at the start of ${b}'s log (epoch ${r.epoch})`,
    `next: qsync consume --master ${b} --replica ${a}`,
  ]);
  return ExitCode.ok;
}

export function failoverCommands(program: Command): void {
  common(program.command('failover'))
    .description(
      'planned switchover: fence the master, let the replica apply everything, make it the master; the old master is left ready to be its replica',
    )
    .addOption(replicaOption())
    .addOption(queueOption())
    .option('--timeout-ms <ms>', `how long the replica has to apply everything once the master is fenced (default ${FAILOVER_TIMEOUT_MS})`)
    .option('--abort', 'take back a failover that stopped half-way (before the replica was promoted): unfence the master, unmark the replica')
    .option('--json', 'print JSON')
    .action(async (o: RoleOpts) => {
      setExitCode(await failover(o));
    });

  common(program.command('promote'))
    .description('emergency: make the replica a master of the queue now, recording where it left the old master (--master, fenced when it answers)')
    .addOption(replicaOption())
    .addOption(queueOption())
    .option('--json', 'print JSON')
    .action(async (o: RoleOpts) => {
      setExitCode(await promote(o));
    });

  common(program.command('rejoin'))
    .description("bring an old master back as the promoted master's replica: its tail set aside, only the keys it touched copied")
    .addOption(replicaOption())
    .addOption(queueOption())
    .option('--tail <action>', `what becomes of the old master's tail on the new master: ${TAIL_ACTIONS.join(', ')} (default park)`)
    .option('--json', 'print JSON')
    .action(async (o: RoleOpts) => {
      setExitCode(await rejoin(o));
    });
}
