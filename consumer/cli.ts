/**
 * The `qsync` command line: consume, status. Every option can also come from
 * an environment variable (named in --help). Bad input ends with one line
 * naming the bad value and exit code 2; other failures have their own codes
 * (see shared/errors.ts).
 */
import { Command, CommanderError, Option } from 'commander';
import type { LevelWithSilent } from 'pino';
import { redisOptionsFromUrl, redactUrl, intOption, nameOption, choiceOption, type TlsFiles } from '../shared/config.js';
import { ExitCode, QsyncError, ConfigError } from '../shared/errors.js';
import { createLogger, LOG_LEVELS } from '../shared/logger.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE } from '../shared/keys.js';
import { probe } from '../shared/probe.js';
import { aclRules, ACL_ROLES } from '../shared/acl.js';
import { SyncWorker, WORKER_DEFAULTS } from './worker.js';
import { connect } from './connections.js';
import { serveMetrics, workerMetrics, type MetricsServer } from './metrics.js';
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../shared/logger.js';
import { findQueues, formatStatus, readStatus } from './status.js';

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

async function consume(o: CommonOpts & Record<string, string | undefined>): Promise<void> {
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
  const metrics = metricsPort === undefined ? undefined : await startMetrics(worker, master, options, metricsPort, log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping: finishing the batches in flight');
      void worker.close().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await metrics?.close();
  log.info({ applied: worker.applied }, 'stopped');
}

async function startMetrics(worker: SyncWorker, master: RedisOptions, o: { prefix: string; queue: string; queueDb: number; timeoutMs: number }, port: number, log: Logger): Promise<{ close(): Promise<void> }> {
  const client = connect({ ...master, db: o.queueDb }, { commandTimeoutMs: o.timeoutMs }, `qsync:${o.queue}:metrics`);
  let server: MetricsServer;
  try {
    server = await serveMetrics(workerMetrics(worker, client, o.prefix, o.queue), port);
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

/** Exit code of `status`: the worst state among the queues, so that monitors can run it as a check. */
function statusExitCode(states: string[]): number {
  if (states.includes('halted')) return ExitCode.halted;
  if (states.includes('resync-needed')) return ExitCode.resyncNeeded;
  return ExitCode.ok;
}

async function status(o: CommonOpts & { json?: boolean }): Promise<number> {
  const url = required(o.master, '--master', 'QSYNC_MASTER');
  const prefix = nameOption(o.prefix, '--prefix', DEFAULT_PREFIX);
  const master = await probe(
    { ...withoutDb(redisOptionsFromUrl(url, '--master', tlsFiles(o)), '--master', url), db: intOption(o.queueDb, '--queue-db', 0, 0, 10_000) },
    'master',
    redactUrl(url),
  );
  try {
    const queues = o.queue ? [nameOption(o.queue, '--queue', DEFAULT_QUEUE)] : await findQueues(master, prefix);
    const rows = await Promise.all(queues.map((q) => readStatus(master, prefix, q)));
    process.stdout.write((o.json ? JSON.stringify(rows, null, 2) : formatStatus(rows)) + '\n');
    return statusExitCode(rows.map((r) => r.state));
  } finally {
    master.disconnect();
  }
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
    .action((o) => consume(o));

  common(program.command('status'))
    .description('show depth, lag, consumer and state of each queue')
    .addOption(new Option('--queue <name>', 'only this queue (default: every queue found)').env('QSYNC_QUEUE'))
    .option('--json', 'print JSON')
    .action(async (o) => {
      exitCode = await status(o);
    });

  program
    .command('acl')
    .description('print least-privilege ACL rules for a qsync user (consumer-master, consumer-replica, producer)')
    .argument('<role>', ACL_ROLES.join(' | '))
    .addOption(new Option('--prefix <name>', "prefix of qsync's keys").env('QSYNC_PREFIX').default(DEFAULT_PREFIX))
    .option('--user <name>', 'user name for the printed ACL SETUSER line', 'qsync')
    .action((role: string, o: { prefix: string; user: string }) => {
      const r = choiceOption(role, 'role', ACL_ROLES, 'consumer-master');
      process.stdout.write(`ACL SETUSER ${o.user} on >PASSWORD ${aclRules(r, nameOption(o.prefix, '--prefix', DEFAULT_PREFIX)).join(' ')}\n`);
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
