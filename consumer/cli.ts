/**
 * The `qsync` command line: consume, status, limit, dlq, verify, jobs, resync, repair, acl. Every option can also
 * come from an environment variable (named in --help). Bad input ends with
 * one line naming the bad value and exit code 2; other failures have their
 * own codes (see shared/errors.ts).
 */
import { EventEmitter } from 'node:events';
import { Command, CommanderError, Option } from 'commander';
import type { LevelWithSilent } from 'pino';
import { redisOptionsFromUrl, redactUrl, intOption, nameOption, choiceOption, type TlsFiles } from '../shared/config.js';
import { ExitCode, QsyncError, ConfigError } from '../shared/errors.js';
import { createLogger, LOG_LEVELS } from '../shared/logger.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE, QueueKeys } from '../shared/keys.js';
import { defineScripts } from '../shared/scripts.js';
import { probe } from '../shared/probe.js';
import { aclRules, ACL_ROLES } from '../shared/acl.js';
import { SyncWorker, WORKER_DEFAULTS } from './worker.js';
import { connect } from './connections.js';
import { serveMetrics, workerMetrics, type MetricsServer } from './metrics.js';
import type { Redis, RedisOptions } from 'ioredis';
import type { Logger } from '../shared/logger.js';
import { findQueues, formatStatus, readStatus } from './status.js';
import { ON_ERROR } from './refusals.js';
import { dropDeadLetters, formatDeadLetters, listDeadLetters, retryDeadLetters, type Selection } from './dlq.js';
import { formatLimits, limitChange, readUsage, setLimits, DEFAULT_MAX_DIRTY, type LimitFlags } from './limits.js';
import { controlCommands } from './control-cli.js';
import { startJobWorker } from './jobs.js';
import './job-types.js';
import { copyCommand } from './copy-cli.js';

interface CommonOpts {
  master?: string;
  prefix: string;
  queue?: string;
  queueDb?: string;
  logLevel: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsInsecure?: boolean;
}

function required(value: string | undefined, flag: string, env: string): string {
  if (!value) throw new ConfigError(`qsync: ${flag} is required (or set ${env})`);
  return value;
}

/** Entries carry their own db, and --queue-db places qsync's keys: a db in a URL would be ignored, so it is refused. */
function withoutDb(options: RedisOptions, flag: string, url: string): RedisOptions {
  if (options.db) throw new ConfigError(`qsync: ${flag} '${redactUrl(url)}' names db ${options.db}; writes replay into the db they were made in, and --queue-db sets where qsync keeps its keys`);
  return options;
}

function tlsFiles(o: CommonOpts): TlsFiles {
  return { ca: o.tlsCa, cert: o.tlsCert, key: o.tlsKey, insecure: o.tlsInsecure };
}

function common(cmd: Command): Command {
  return cmd
    .addOption(new Option('--master <url>', 'master URL, redis://[user:password@]host:port').env('QSYNC_MASTER'))
    .addOption(new Option('--prefix <name>', "prefix of qsync's keys").env('QSYNC_PREFIX').default(DEFAULT_PREFIX))
    .addOption(new Option('--queue-db <n>', 'db of the queue on the master and of the watermark on the replica').env('QSYNC_QUEUE_DB'))
    .addOption(new Option('--tls-ca <file>', 'CA bundle (PEM) to verify rediss:// servers').env('QSYNC_TLS_CA'))
    .addOption(new Option('--tls-cert <file>', 'client certificate (PEM) for rediss://').env('QSYNC_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'client key (PEM) for rediss://').env('QSYNC_TLS_KEY'))
    .addOption(new Option('--tls-insecure', 'do not verify server certificates (testing only)'))
    .addOption(new Option('--log-level <level>', 'log level').env('QSYNC_LOG_LEVEL').default('info'));
}

async function consume(o: CommonOpts & Record<string, string | undefined> & { jobs?: boolean }): Promise<void> {
  const masterUrl = required(o.master, '--master', 'QSYNC_MASTER');
  const replicaUrl = required(o.replica, '--replica', 'QSYNC_REPLICA');
  const tls = tlsFiles(o);
  const master = withoutDb(redisOptionsFromUrl(masterUrl, '--master', tls), '--master', masterUrl);
  const replica = withoutDb(redisOptionsFromUrl(replicaUrl, '--replica', tls), '--replica', replicaUrl);
  const level = choiceOption(o.logLevel, '--log-level', LOG_LEVELS, 'info') as LevelWithSilent;
  const options = {
    queue: nameOption(o.queue, '--queue', DEFAULT_QUEUE),
    prefix: nameOption(o.prefix, '--prefix', DEFAULT_PREFIX),
    queueDb: intOption(o.queueDb, '--queue-db', 0, 0, 10_000),
    batchSize: intOption(o.batchSize, '--batch-size', WORKER_DEFAULTS.batchSize, 1, 100_000),
    batchBytes: intOption(o.batchBytes, '--batch-bytes', WORKER_DEFAULTS.batchBytes, 1024),
    window: intOption(o.window, '--window', WORKER_DEFAULTS.window, 1, 64),
    leaseMs: intOption(o.leaseMs, '--lease-ms', WORKER_DEFAULTS.leaseMs, 300),
    timeoutMs: intOption(o.timeoutMs, '--timeout-ms', WORKER_DEFAULTS.timeoutMs, 100),
    onError: choiceOption(o.onError, '--on-error', ON_ERROR, WORKER_DEFAULTS.onError),
  };
  const metricsPort = o.metricsPort === undefined ? undefined : intOption(o.metricsPort, '--metrics-port', 0, 0, 65_535);
  const log = createLogger(level);
  // Credentials and TLS are checked once up front: those do not heal by retrying.
  // An unreachable server is not fatal; the worker waits for it.
  for (const [opts, what, url] of [[master, 'master', masterUrl], [replica, 'replica', replicaUrl]] as const) {
    try {
      (await probe(opts, what, redactUrl(url), options.timeoutMs)).disconnect();
    } catch (err) {
      if (err instanceof QsyncError && err.exitCode === ExitCode.unreachable) {
        log.warn({ side: what, err: err.message }, `${what} unreachable at start; retrying until it answers`);
      } else throw err;
    }
  }
  log.info({ master: redactUrl(masterUrl), replica: redactUrl(replicaUrl), ...options }, 'qsync consumer starting');
  const worker = new SyncWorker({ ...options, master, replica, logger: log }).start();
  const jobProgress = new EventEmitter();
  const onProgress = (job: string, p: unknown) => jobProgress.emit('progress', job, p);
  const jobs = o.jobs === false ? undefined : startJobWorker({ ...options, master, replica, log, worker, onProgress });
  const metrics = metricsPort === undefined ? undefined : await startMetrics(worker, jobProgress, master, options, metricsPort, log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping: finishing the batches in flight');
      void Promise.all([worker.close(), jobs?.close()]).then(() => resolve());
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await metrics?.close();
  log.info({ applied: worker.applied }, 'stopped');
}

async function startMetrics(worker: SyncWorker, jobProgress: EventEmitter, master: RedisOptions, o: { prefix: string; queue: string; queueDb: number; timeoutMs: number }, port: number, log: Logger): Promise<{ close(): Promise<void> }> {
  const client = connect({ ...master, db: o.queueDb }, { commandTimeoutMs: o.timeoutMs }, `qsync:${o.queue}:metrics`);
  let server: MetricsServer;
  try {
    server = await serveMetrics(workerMetrics(worker, client, o.prefix, o.queue, jobProgress), port);
  } catch (err) {
    client.disconnect();
    throw new ConfigError(`qsync: cannot serve metrics on --metrics-port ${port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  log.info({ port: server.port }, 'metrics on /metrics');
  return {
    close: async () => {
      await server.close();
      client.disconnect();
    },
  };
}

/** Exit code of `status`: the worst state among the queues (the consumers' and the queues' own), so that monitors can run it as a check. */
function statusExitCode(states: string[]): number {
  if (states.includes('halted')) return ExitCode.halted;
  if (states.includes('resync-needed')) return ExitCode.resyncNeeded;
  if (states.includes('repair-needed')) return ExitCode.repairNeeded;
  return ExitCode.ok;
}

/** Connection options for --master or --replica, checked. */
function sideOptions(o: CommonOpts & { replica?: string }, side: 'master' | 'replica'): RedisOptions {
  const url = required(o[side], `--${side}`, `QSYNC_${side.toUpperCase()}`);
  return withoutDb(redisOptionsFromUrl(url, `--${side}`, tlsFiles(o)), `--${side}`, url);
}

/** One checked connection to the master or the replica, in the queue db, for a command that runs once. */
async function open(o: CommonOpts & { replica?: string }, side: 'master' | 'replica'): Promise<Redis> {
  const options = sideOptions(o, side);
  const client = await probe({ ...options, db: intOption(o.queueDb, '--queue-db', 0, 0, 10_000) }, side, redactUrl(o[side]!));
  defineScripts(client);
  return client;
}

async function status(o: CommonOpts & { json?: boolean }): Promise<number> {
  const prefix = nameOption(o.prefix, '--prefix', DEFAULT_PREFIX);
  const master = await open(o, 'master');
  try {
    const queues = o.queue ? [nameOption(o.queue, '--queue', DEFAULT_QUEUE)] : await findQueues(master, prefix);
    const rows = await Promise.all(queues.map((q) => readStatus(master, prefix, q)));
    process.stdout.write((o.json ? JSON.stringify(rows, null, 2) : formatStatus(rows)) + '\n');
    return statusExitCode(rows.flatMap((r) => [r.state, r.queueState]));
  } finally {
    master.disconnect();
  }
}

/** `qsync limit`: checks the flags before connecting, applies the change (if any) and prints the limits in force. */
async function limit(o: CommonOpts & LimitFlags): Promise<number> {
  const keys = new QueueKeys(nameOption(o.prefix, '--prefix', DEFAULT_PREFIX), nameOption(o.queue, '--queue', DEFAULT_QUEUE));
  const change = limitChange(o);
  const master = await open(o, 'master');
  try {
    const changes = Object.values(change).some((v) => v !== undefined && v !== false);
    process.stdout.write(formatLimits(keys, changes ? await setLimits(master, keys, change) : await readUsage(master, keys)) + '\n');
    return ExitCode.ok;
  } finally {
    master.disconnect();
  }
}

type DlqOpts = CommonOpts & { replica?: string; seq?: string; all?: boolean; garbage?: boolean; json?: boolean };

/** Exactly one of --seq N, --all (and --garbage for drop). */
function selection(o: DlqOpts, command: string, garbage: boolean): Selection {
  const given = [o.seq !== undefined, o.all === true, o.garbage === true].filter(Boolean).length;
  if (given !== 1) throw new ConfigError(`qsync: dlq ${command} needs one of --seq N, --all${garbage ? ', --garbage' : ''}`);
  if (o.seq !== undefined) return { seq: intOption(o.seq, '--seq', 0, 1) };
  return o.all ? { all: true } : { garbage: true };
}

/** Runs a dlq command against the master (and the replica for retry), closing them after. */
async function dlq(o: DlqOpts, run: (keys: QueueKeys, master: Redis, replica?: Redis) => Promise<number>, replica = false): Promise<number> {
  const keys = new QueueKeys(nameOption(o.prefix, '--prefix', DEFAULT_PREFIX), nameOption(o.queue, '--queue', DEFAULT_QUEUE));
  if (replica) required(o.replica, '--replica', 'QSYNC_REPLICA');
  const clients: Redis[] = [];
  try {
    clients.push(await open(o, 'master'));
    if (replica) clients.push(await open(o, 'replica'));
    return await run(keys, clients[0], clients[1]);
  } finally {
    for (const c of clients) c.disconnect();
  }
}

function dlqCommands(program: Command): void {
  const group = program.command('dlq').description('dead letters: entries a consumer run with --on-error park set aside');
  const queue = () => new Option('--queue <name>', 'queue').env('QSYNC_QUEUE').default(DEFAULT_QUEUE);
  const pick = (cmd: Command) => cmd.option('--seq <n>', 'the dead letter of this entry').option('--all', 'every dead letter');

  common(group.command('list'))
    .description('show the dead letters: seq, age, db, commands, error, when parked')
    .addOption(queue())
    .option('--json', 'print JSON')
    .action(async (o: DlqOpts) => {
      exitCode = await dlq(o, async (keys, master) => {
        const views = await listDeadLetters(master, keys);
        process.stdout.write((o.json ? JSON.stringify(views, null, 2) : formatDeadLetters(views, keys.dlq)) + '\n');
        return ExitCode.ok;
      });
    });

  pick(common(group.command('retry')))
    .description('apply dead letters on the replica now (after the commands already applied) and remove those that applied')
    .addOption(new Option('--replica <url>', 'replica URL, redis:// or rediss://').env('QSYNC_REPLICA'))
    .addOption(queue())
    .action(async (o: DlqOpts) => {
      const which = selection(o, 'retry', false);
      exitCode = await dlq(o, async (keys, master, replica) => {
        const results = await retryDeadLetters(master, replica!, keys, intOption(o.queueDb, '--queue-db', 0, 0, 10_000), which);
        for (const r of results) (r.applied ? process.stdout : process.stderr).write(`${r.applied ? '' : 'qsync: '}${r.message}\n`);
        if (results.length === 0) process.stdout.write(`no dead letters in ${keys.dlq}\n`);
        return results.every((r) => r.applied) ? ExitCode.ok : ExitCode.refused;
      }, true);
    });

  pick(common(group.command('drop')))
    .description('remove dead letters without applying them')
    .addOption(queue())
    .option('--garbage', 'every dead letter that is not a qsync entry')
    .action(async (o: DlqOpts) => {
      const which = selection(o, 'drop', true);
      exitCode = await dlq(o, async (keys, master) => {
        process.stdout.write(`dropped ${await dropDeadLetters(master, keys, which)} dead letters from ${keys.dlq}\n`);
        return ExitCode.ok;
      });
    });
}

let exitCode: number = ExitCode.ok;

export function buildProgram(): Command {
  const program = new Command('qsync')
    .description('Keep a Redis replica in another data centre in sync through a durable write log.')
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, 'qsync: ')) })
    .showHelpAfterError(false);

  common(program.command('consume'))
    .description('drain the queue from the master and apply it to the replica (runs until SIGTERM/SIGINT)')
    .addOption(new Option('--replica <url>', 'replica URL, redis:// or rediss://').env('QSYNC_REPLICA'))
    .addOption(new Option('--queue <name>', 'queue to drain').env('QSYNC_QUEUE').default(DEFAULT_QUEUE))
    .addOption(new Option('--batch-size <n>', 'most entries per batch').env('QSYNC_BATCH_SIZE').default(String(WORKER_DEFAULTS.batchSize)))
    .addOption(new Option('--batch-bytes <n>', 'most bytes per batch').env('QSYNC_BATCH_BYTES').default(String(WORKER_DEFAULTS.batchBytes)))
    .addOption(new Option('--window <n>', 'batches in flight to the replica').env('QSYNC_WINDOW').default(String(WORKER_DEFAULTS.window)))
    .addOption(new Option('--lease-ms <ms>', 'consumer lease; a standby takes over this long after a crash').env('QSYNC_LEASE_MS').default(String(WORKER_DEFAULTS.leaseMs)))
    .addOption(new Option('--timeout-ms <ms>', 'a link silent this long is reset').env('QSYNC_TIMEOUT_MS').default(String(WORKER_DEFAULTS.timeoutMs)))
    .addOption(new Option('--metrics-port <port>', 'serve Prometheus metrics on this port (/metrics); 0 picks a free one').env('QSYNC_METRICS_PORT'))
    .addOption(new Option('--on-error <mode>', 'an entry the replica refuses: halt, or park it as a dead letter and go on').env('QSYNC_ON_ERROR').default(WORKER_DEFAULTS.onError))
    .option('--no-jobs', 'do not run control jobs (qsync verify --job, --every)')
    .action((o) => consume(o));

  common(program.command('status'))
    .description('show depth, lag, consumer and state of each queue')
    .addOption(new Option('--queue <name>', 'only this queue (default: every queue found)').env('QSYNC_QUEUE'))
    .option('--json', 'print JSON')
    .action(async (o) => {
      exitCode = await status(o);
    });

  dlqCommands(program);

  common(program.command('limit'))
    .description('show or set the cap on what the queue holds on the master, and what writes to a full queue do')
    .addOption(new Option('--queue <name>', 'queue').env('QSYNC_QUEUE').default(DEFAULT_QUEUE))
    .option('--max-entries <n>', 'most entries queued (0: no cap)')
    .option('--max-bytes <size>', 'most bytes of entries queued: 67108864, 64mb, 1gb (0: no cap)')
    .option('--policy <policy>', 'writes to a full queue: reject (QueueFullError) or mark-dirty (run unqueued, keys recorded)')
    .option('--max-dirty <n>', `mark-dirty: most keys recorded before a full resync is needed (default ${DEFAULT_MAX_DIRTY})`)
    .option('--clear', 'remove every cap')
    .option('--clear-repair', 'once the replica is repaired: forget the dirty keys and queue writes again')
    .action(async (o: CommonOpts & LimitFlags) => {
      exitCode = await limit(o);
    });
  controlCommands(program, { common, sideOptions, open, exit: (code) => (exitCode = code) });
  const copyCli = { common, sideOptions, exit: (code: number) => (exitCode = code) };
  copyCommand(program, copyCli, 'resync');
  copyCommand(program, copyCli, 'repair');

  program
    .command('acl')
    .description(`print least-privilege ACL rules for a qsync user (${ACL_ROLES.join(', ')})`)
    .argument('<role>', ACL_ROLES.join(' | '))
    .addOption(new Option('--prefix <name>', "prefix of qsync's keys").env('QSYNC_PREFIX').default(DEFAULT_PREFIX))
    .option('--user <name>', 'user name for the printed ACL SETUSER line', 'qsync')
    .action((role: string, o: { prefix: string; user: string }) => {
      const r = choiceOption(role, 'role', ACL_ROLES, 'consumer-master');
      process.stdout.write(`ACL SETUSER ${o.user} on >PASSWORD ${aclRules(r, nameOption(o.prefix, '--prefix', DEFAULT_PREFIX))
        .map((rule) => (rule.includes(' ') ? `"${rule}"` : rule))
        .join(' ')}\n`);
    });

  return program;
}

/** Runs the CLI and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    exitCode = ExitCode.ok;
    await buildProgram().parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; help shown because no command was given is a usage error.
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (err instanceof QsyncError) {
      process.stderr.write(`${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`qsync: unexpected error: ${(err as Error).message}\n`);
    return ExitCode.internal;
  }
}
