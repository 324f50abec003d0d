/**
 * The `resync` and `repair` commands: rebuild the replica from a copy of the
 * master (copy/resync.ts), or copy only the keys written unqueued
 * (copy/repair.ts), while writers go on; run here or as a control job
 * inside the consumer, with a progress bar on a terminal and progress log
 * lines otherwise.
 */
import { Option, type Command } from 'commander';
import cliProgress from 'cli-progress';
import type { RedisOptions } from 'ioredis';
import type { LevelWithSilent } from 'pino';
import { choiceOption, describeTarget, intOption, nameOption, queueDbOption, redactUrl } from '../../shared/config.js';
import { ExitCode } from '../../shared/errors.js';
import { probe } from '../../shared/probe.js';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE, QueueKeys, jobsPrefix } from '../../shared/keys.js';
import { createLogger, LOG_LEVELS, type Logger } from '../../shared/logger.js';
import { RESYNC_METHODS, runResync, type ResyncMethod, type ResyncOptions } from '../copy/resync.js';
import { REPLICATION_TIMEOUT_MS } from '../copy/native-sync.js';
import { runRepair } from '../copy/repair.js';
import { COPY_DEFAULTS, type CopyProgress, type CopyRunResult } from '../copy/run.js';
import { controlQueue, followJob, type JobProgress } from '../jobs/runner.js';
import { describeCopy } from '../copy/jobs.js';
import { sizeOption, durationOption } from '../../shared/units.js';
import { common, openPair, setExitCode, sideOptions } from './options.js';
import { replicaNameOption } from './replicas.js';
import { copyOnCluster } from './copy-cluster.js';

type What = 'resync' | 'repair';

interface CopyFlags {
  master?: string;
  replica?: string;
  prefix: string;
  queue: string;
  queueDb?: string;
  name?: string;
  logLevel: string;
  scanCount?: string;
  bigMembers?: string;
  bigBytes?: string;
  chunk?: string;
  leaseMs?: string;
  job?: boolean;
  method?: string;
  replicationTimeout?: string;
}

/** Progress lines at most this often when there is no terminal. */
const LOG_EVERY_MS = 2000;

/** Reports progress: a bar on a terminal (stderr: stdout carries the JSON logs), log lines otherwise. */
function reporter(what: What, log: Logger): { update(p: CopyProgress): void; stop(): void } {
  const rate = (p: CopyProgress) => (p.seconds > 0 ? Math.round(p.copied / p.seconds) : 0);
  const eta = (p: CopyProgress) => (rate(p) > 0 ? Math.max(0, Math.round((p.total - p.copied) / rate(p))) : null);
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${what} |{bar}| {value}/{total} keys, {rate} keys/s, ETA {eta_formatted}, {phase}, {replayed} entries replayed`,
        stream: process.stderr,
        hideCursor: true,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(p) {
        const payload = { rate: rate(p), phase: p.phase, replayed: p.replayed };
        if (!started) bar.start(Math.max(p.total, p.copied), p.copied, payload);
        started = true;
        bar.setTotal(Math.max(p.total, p.copied));
        bar.update(p.copied, payload);
      },
      stop: () => bar.stop(),
    };
  }
  let last = 0;
  return {
    update(p) {
      if (Date.now() - last < LOG_EVERY_MS && p.phase !== 'done') return;
      last = Date.now();
      log.info(
        { phase: p.phase, copied: p.copied, total: p.total, keysPerSecond: rate(p), etaSeconds: eta(p), replayed: p.replayed },
        `${what} progress`,
      );
    },
    stop: () => {},
  };
}

type Settings = {
  queue: string;
  name: string;
  prefix: string;
  queueDb: number;
  scanCount: number;
  bigMembers: number;
  bigBytes: number;
  chunk: number;
  leaseMs: number;
  /** resync only */
  method?: ResyncMethod;
  replicationTimeoutMs?: number;
};

/**
 * Reaches the master (one line and its exit code when it cannot) and says
 * whether a live consumer holds the queue's lease (the key exists until its
 * holder stops renewing it).
 */
async function consumerRunning(master: RedisOptions, s: { prefix: string; queue: string; queueDb: number; name: string }): Promise<boolean> {
  const client = await probe({ ...master, db: s.queueDb }, 'master', describeTarget(master));
  try {
    return (await client.exists(new QueueKeys(s.prefix, s.queue, s.name).lease)) === 1;
  } finally {
    client.disconnect();
  }
}

/** Exit code of a run that failed, or ended with writes unqueued again. */
const FAILED: Record<What, number> = { resync: ExitCode.resyncNeeded, repair: ExitCode.repairNeeded };

/** The exit code of a finished run: a repair that saw writes go unqueued again is not done. */
const finished = (result: CopyRunResult): number => ((result as { dirtyAgain?: boolean }).dirtyAgain ? ExitCode.repairNeeded : ExitCode.ok);

/** Queues a resync or repair job for the queue's consumer and follows it; Ctrl-C detaches. */
async function viaJob(what: What, master: RedisOptions, s: Settings, log: Logger): Promise<number> {
  const queue = controlQueue({ master, prefix: s.prefix, queue: s.queue, queueDb: s.queueDb, name: s.name });
  const detach = new AbortController();
  const onSigint = () => detach.abort();
  process.once('SIGINT', onSigint);
  const progress = reporter(what, log);
  try {
    const { scanCount, bigMembers, bigBytes, chunk, method, replicationTimeoutMs } = s;
    const job = await queue.add(what, { scanCount, bigMembers, bigBytes, chunk, method, replicationTimeoutMs });
    process.stderr.write(
      `qsync: ${what} job ${job.id} queued in ${jobsPrefix(s.prefix)}:${s.queue}; the consumer holding the lease of queue '${s.queue}' runs it (Ctrl-C detaches, the job goes on)\n`,
    );
    const followed = await followJob(
      queue,
      job.id!,
      (p) => {
        const { done, total, phase, replayed, seconds } = (p ?? {}) as Partial<JobProgress>;
        if (typeof done === 'number' && typeof total === 'number' && phase !== 'waiting')
          progress.update({
            copied: done,
            total,
            phase: phase as CopyProgress['phase'],
            replayed: Number(replayed ?? 0),
            seconds: Number(seconds ?? 0),
          });
      },
      detach.signal,
    );
    progress.stop();
    if (followed.outcome === 'detached') {
      process.stderr.write(`qsync: detached; ${what} job ${job.id} goes on (qsync jobs lists it)\n`);
      return ExitCode.ok;
    }
    if (followed.outcome === 'failed') {
      process.stderr.write(`qsync: ${what} job ${job.id} failed after ${followed.job.attemptsMade} attempts: ${followed.job.failedReason}\n`);
      return FAILED[what];
    }
    const result = followed.job.result as CopyRunResult;
    process.stdout.write(`${what} job ${job.id}: ${describeCopy(what, result)}\n`);
    return finished(result);
  } finally {
    progress.stop();
    process.off('SIGINT', onSigint);
    await queue.close();
  }
}

/** What differs between the two commands. */
const COMMANDS: Record<What, { description: string; run: (o: ResyncOptions) => Promise<CopyRunResult> }> = {
  resync: {
    description:
      "rebuild the replica from a copy of the master while writers go on: by Redis's own full sync when the replica server can reach the master, else key by key (--method); the replica must be dedicated (it is FLUSHALLed); next to a running consumer it runs inside it as a control job; on a Redis Cluster, slot by slot with the consumer stopped",
    run: runResync,
  },
  repair: {
    description:
      'after writes went unqueued (policy mark-dirty): copy only the keys recorded dirty to the replica while writers go on, then stream again; next to a running consumer it runs inside it as a control job; on a Redis Cluster, slot by slot with the consumer stopped',
    run: runRepair,
  },
};

/** The options only a resync takes: how it copies the data. */
function methodOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--method <method>',
        "auto: Redis's full sync (REPLICAOF on the replica server; the master forks), or the copy if the replica server cannot sync from the master; replication: only the full sync; copy: key by key, no fork",
      ).default('auto'),
    )
    .addOption(
      new Option(
        '--replication-timeout <duration>',
        'how long the replica server may go without a link to the master or a sync under way before the full sync is given up (10s)',
      ).default(String(REPLICATION_TIMEOUT_MS)),
    );
}

/** --method and --replication-timeout, checked; none for a repair. */
function methodSettings(what: What, o: CopyFlags): Pick<Settings, 'method' | 'replicationTimeoutMs'> {
  if (what !== 'resync') return {};
  return {
    method: choiceOption(o.method, '--method', RESYNC_METHODS, 'auto'),
    replicationTimeoutMs: durationOption(o.replicationTimeout, '--replication-timeout', REPLICATION_TIMEOUT_MS, { min: 100 }),
  };
}

/** Adds `qsync resync` or `qsync repair`. */
export function copyCommand(program: Command, what: What): void {
  const { description, run } = COMMANDS[what];
  const cmd = common(program.command(what));
  if (what === 'resync') methodOptions(cmd);
  cmd
    .description(description)
    .addOption(new Option('--replica <url>', 'replica URL, redis://, rediss:// or redis+sentinel://').env('QSYNC_REPLICA'))
    .addOption(new Option('--queue <name>', 'queue whose log is replayed after the copy').env('QSYNC_QUEUE').default(DEFAULT_QUEUE))
    .addOption(replicaNameOption(`the replica to ${what}, among those the log feeds; the others go on streaming`))
    .addOption(new Option('--scan-count <n>', 'keys per batch, each read in one atomic step').default(String(COPY_DEFAULTS.scanCount)))
    .addOption(
      new Option('--big-members <n>', 'a key with more members is copied in chunks from a snapshot').default(String(COPY_DEFAULTS.bigMembers)),
    )
    .addOption(
      new Option('--big-bytes <size>', 'a key bigger than this is copied in chunks from a snapshot (8mb)').default(String(COPY_DEFAULTS.bigBytes)),
    )
    .addOption(new Option('--chunk <n>', 'members per chunk of a big key').default(String(COPY_DEFAULTS.chunk)))
    .addOption(
      new Option('--lease-ms <duration>', `consumer lease the ${what} holds (10000, 10s)`)
        .env('QSYNC_LEASE_MS')
        .default(String(COPY_DEFAULTS.leaseMs)),
    )
    .option(
      '--job',
      'run it as a control job inside the consumer, which pauses while it runs (the default when one holds the lease; with none running, the job waits for one)',
    )
    .action(async (o: CopyFlags) => {
      const master = sideOptions(o, 'master');
      const log = createLogger(choiceOption(o.logLevel, '--log-level', LOG_LEVELS, 'info') as LevelWithSilent);
      const options = {
        queue: nameOption(o.queue, '--queue', DEFAULT_QUEUE),
        prefix: nameOption(o.prefix, '--prefix', DEFAULT_PREFIX),
        queueDb: queueDbOption(o.queueDb, '--queue-db'),
        name: nameOption(o.name, '--name', DEFAULT_NAME),
        scanCount: intOption(o.scanCount, '--scan-count', COPY_DEFAULTS.scanCount, 1, 100_000),
        bigMembers: intOption(o.bigMembers, '--big-members', COPY_DEFAULTS.bigMembers, 1),
        bigBytes: sizeOption(o.bigBytes, '--big-bytes', COPY_DEFAULTS.bigBytes, { min: 1024 }),
        chunk: intOption(o.chunk, '--chunk', COPY_DEFAULTS.chunk, 1, 3000),
        leaseMs: durationOption(o.leaseMs, '--lease-ms', COPY_DEFAULTS.leaseMs, { min: 300 }),
        ...methodSettings(what, o),
      };
      // A Redis Cluster source: every hash slot's queue on its own.
      const onCluster = await copyOnCluster(what, o, options, log, reporter(what, log));
      if (onCluster !== undefined) {
        setExitCode(onCluster);
        return;
      }
      // Next to a running consumer, only the consumer can pause its drain for the run.
      const running = await consumerRunning(master, options);
      if (o.job || running) {
        if (!o.job && running)
          process.stderr.write(`qsync: a consumer holds the lease of queue '${options.queue}': the ${what} runs inside it, as a control job\n`);
        setExitCode(await viaJob(what, master, options, log));
        return;
      }
      const replica = sideOptions(o, 'replica');
      (await openPair(o)).close();
      log.info({ master: redactUrl(o.master!), replica: redactUrl(o.replica!), ...options }, `${what} starting`);
      const progress = reporter(what, log);
      let result: CopyRunResult;
      try {
        result = await run({ ...options, master, replica, logger: log, onProgress: (p) => progress.update(p) });
      } finally {
        progress.stop();
      }
      process.stdout.write(`${what}: ${describeCopy(what, result)}\n`);
      setExitCode(finished(result));
    });
}
