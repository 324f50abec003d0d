/** `qsync consume`: drain a queue from the master to the replica until SIGTERM or SIGINT, with control jobs and metrics. */
import { EventEmitter } from 'node:events';
import { Option, type Command } from 'commander';
import type { LevelWithSilent } from 'pino';
import type { RedisOptions } from 'ioredis';
import { redisOptionsFromUrl, redactUrl, intOption, nameOption, choiceOption, queueDbOption } from '../../shared/config.js';
import { ExitCode, QsyncError, ConfigError } from '../../shared/errors.js';
import { createLogger, LOG_LEVELS, type Logger } from '../../shared/logger.js';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE } from '../../shared/keys.js';
import { sizeOption, durationOption } from '../../shared/units.js';
import { SyncWorker, WORKER_DEFAULTS } from '../drain/worker.js';
import { connect } from '../drain/connections.js';
import { backoffDelay, sleep } from '../drain/backoff.js';
import { ON_ERROR } from '../drain/confirm.js';
import { workerHealth } from '../metrics/health.js';
import { serveMetrics, workerMetrics, type MetricsServer } from '../metrics/metrics.js';
import { serverMetrics } from '../metrics/servers.js';
import { startJobWorker } from '../jobs/runner.js';
import { MAX_CLOCK_OFFSET_MS } from '../queue/servers.js';
import { ServerMonitor } from '../queue/server-monitor.js';
import './job-types.js';
import { common, openPair, required, tlsFiles, withoutDb, type CommonOpts } from './options.js';
import { replicaNameOption } from './replicas.js';
import { consumeCluster, isClusterPair } from './consume-cluster.js';
import { clusterQueueDb } from '../cluster/shard-map.js';

/**
 * Checks both servers once up front (credentials, TLS, the queue db, two
 * servers the right way round): those do not heal by retrying. A server
 * that cannot be reached yet is waited for, since the pair can only be
 * checked once both answer.
 */
async function checkAtStart(o: CommonOpts & { replica?: string }, timeoutMs: number, log: Logger): Promise<void> {
  await whenReachable(async () => (await openPair(o, timeoutMs)).close(), log);
}

/** Runs `check` until both servers answer it: an unreachable server is waited for, anything else thrown. */
async function whenReachable<T>(check: () => Promise<T>, log: Logger): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await check();
    } catch (err) {
      if (!(err instanceof QsyncError && err.exitCode === ExitCode.unreachable)) throw err;
      if (attempt === 1) log.warn({ err: err.message }, 'unreachable at start; retrying until both servers answer');
      await sleep(backoffDelay(attempt, { minMs: 250, maxMs: 5000, quickMs: 0 }));
    }
  }
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
    queueDb: queueDbOption(o.queueDb, '--queue-db'),
    name: nameOption(o.name, '--name', DEFAULT_NAME),
    relay: Boolean(o.relay),
    batchSize: intOption(o.batchSize, '--batch-size', WORKER_DEFAULTS.batchSize, 1, 100_000),
    batchBytes: sizeOption(o.batchBytes, '--batch-bytes', WORKER_DEFAULTS.batchBytes, { min: 1024 }),
    window: intOption(o.window, '--window', WORKER_DEFAULTS.window, 1, 64),
    leaseMs: durationOption(o.leaseMs, '--lease-ms', WORKER_DEFAULTS.leaseMs, { min: 300 }),
    timeoutMs: durationOption(o.timeoutMs, '--timeout-ms', WORKER_DEFAULTS.timeoutMs, { min: 100 }),
    onError: choiceOption(o.onError, '--on-error', ON_ERROR, WORKER_DEFAULTS.onError),
    keepApplied: o.keepApplied === undefined ? undefined : intOption(o.keepApplied, '--keep-applied', 0, 0, 1_000_000),
  };
  const metricsPort = o.metricsPort === undefined ? undefined : intOption(o.metricsPort, '--metrics-port', 0, 0, 65_535);
  const maxClockOffsetMs = durationOption(o.maxClockOffsetMs, '--max-clock-offset-ms', MAX_CLOCK_OFFSET_MS, { max: 86_400_000 });
  const log = createLogger(level);
  const sides = { master, replica, masterUrl, replicaUrl };
  if (await whenReachable(() => isClusterPair(sides, options.timeoutMs), log)) {
    const { relay, keepApplied, ...clusterOptions } = options;
    if (relay || keepApplied !== undefined) throw new ConfigError('qsync: --relay and --keep-applied are not supported on a Redis Cluster');
    clusterQueueDb(options.queueDb, '--queue-db', `--master ${redactUrl(masterUrl)}`);
    return consumeCluster(sides, clusterOptions, log, metricsPort);
  }
  await checkAtStart(o, options.timeoutMs, log);
  log.info({ master: redactUrl(masterUrl), replica: redactUrl(replicaUrl), ...options }, 'qsync consumer starting');
  // The servers' warnings are logged before the worker starts.
  const worker = new SyncWorker({ ...options, master, replica, logger: log });
  const servers = await new ServerMonitor({ ...options, master, replica, maxClockOffsetMs, log, active: () => worker.state !== 'standby' }).start();
  worker.start();
  const jobProgress = new EventEmitter();
  const onProgress = (job: string, p: unknown) => jobProgress.emit('progress', job, p);
  const jobs = o.jobs === false ? undefined : startJobWorker({ ...options, master, replica, log, worker, onProgress });
  const metrics = metricsPort === undefined ? undefined : await startMetrics(worker, jobProgress, master, options, metricsPort, log, servers);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping: finishing the batches in flight');
      servers.close();
      void Promise.all([worker.close(), jobs?.close()]).then(() => resolve());
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await metrics?.close();
  log.info({ applied: worker.applied }, 'stopped');
}

async function startMetrics(
  worker: SyncWorker,
  jobProgress: EventEmitter,
  master: RedisOptions,
  o: { prefix: string; queue: string; queueDb: number; timeoutMs: number },
  port: number,
  log: Logger,
  servers: ServerMonitor,
): Promise<{ close(): Promise<void> }> {
  const client = connect({ ...master, db: o.queueDb }, { commandTimeoutMs: o.timeoutMs }, `qsync:${o.queue}:metrics`);
  const health = workerHealth(worker);
  let server: MetricsServer;
  try {
    const registry = workerMetrics(worker, client, o.prefix, o.queue, jobProgress);
    serverMetrics(registry, o.queue, servers);
    server = await serveMetrics(registry, port, { health });
  } catch (err) {
    client.disconnect();
    throw new ConfigError(`qsync: cannot serve metrics on --metrics-port ${port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  log.info({ port: server.port }, 'metrics on /metrics, health on /healthz and /readyz');
  return {
    close: async () => {
      await server.close();
      client.disconnect();
    },
  };
}

export function consumeCommand(program: Command): void {
  common(program.command('consume'))
    .description('drain the queue from the master and apply it to the replica (runs until SIGTERM/SIGINT)')
    .addOption(new Option('--replica <url>', 'replica URL, redis://, rediss:// or redis+sentinel://').env('QSYNC_REPLICA'))
    .addOption(new Option('--queue <name>', 'queue to drain').env('QSYNC_QUEUE').default(DEFAULT_QUEUE))
    .addOption(replicaNameOption('the replica this consumer feeds: each name has its own lease, position in the log and watermark'))
    .addOption(new Option('--batch-size <n>', 'most entries per batch').env('QSYNC_BATCH_SIZE').default(String(WORKER_DEFAULTS.batchSize)))
    .addOption(
      new Option('--batch-bytes <size>', 'most bytes per batch (1048576, 1mb)').env('QSYNC_BATCH_BYTES').default(String(WORKER_DEFAULTS.batchBytes)),
    )
    .addOption(new Option('--window <n>', 'batches in flight to the replica').env('QSYNC_WINDOW').default(String(WORKER_DEFAULTS.window)))
    .addOption(
      new Option('--lease-ms <duration>', 'consumer lease; a standby takes over this long after a crash (5000, 5s)')
        .env('QSYNC_LEASE_MS')
        .default(String(WORKER_DEFAULTS.leaseMs)),
    )
    .addOption(
      new Option('--timeout-ms <duration>', 'a link silent this long is reset (5000, 5s)')
        .env('QSYNC_TIMEOUT_MS')
        .default(String(WORKER_DEFAULTS.timeoutMs)),
    )
    .addOption(
      new Option(
        '--metrics-port <port>',
        'serve Prometheus metrics (/metrics) and health checks (/healthz, /readyz) on this port; 0 picks a free one',
      ).env('QSYNC_METRICS_PORT'),
    )
    .addOption(
      new Option('--on-error <mode>', 'an entry the replica refuses: halt, or park it as a dead letter and go on')
        .env('QSYNC_ON_ERROR')
        .default(WORKER_DEFAULTS.onError),
    )
    .addOption(
      new Option('--max-clock-offset-ms <duration>', "warn when the replica's clock is further than this from the master's")
        .env('QSYNC_MAX_CLOCK_OFFSET_MS')
        .default(String(MAX_CLOCK_OFFSET_MS)),
    )
    .addOption(
      new Option(
        '--keep-applied <n>',
        'entries the replica keeps a record of, so that a master that lost writes the replica applied (a failover to a replica that lagged) can say which keys diverged and qsync repair can copy them; 0: none (default: 10000 when --master is a Sentinel group, else 0)',
      ).env('QSYNC_KEEP_APPLIED'),
    )
    .option('--relay', "log what is applied in the replica's own queue, so that it feeds replicas of its own (a chain)")
    .option('--no-jobs', 'do not run control jobs (qsync verify --job, --every)')
    .action((o) => consume(o));
}
