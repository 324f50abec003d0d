/**
 * `qsync verify`: compare the master and the replica, here or as a control
 * job run by a consumer (once, or on a schedule).
 */
import { Option, type Command } from 'commander';
import { choiceOption, intOption } from '../../shared/config.js';
import { ConfigError, ExitCode, QsyncError, UnreachableError } from '../../shared/errors.js';
import { jobsPrefix } from '../../shared/keys.js';
import { describeError, isLinkError } from '../drain/connections.js';
import { common, openPair, queueOption, queuePlace, setExitCode, sideOptions, type QueuePlace } from './options.js';
import { openQueue } from './jobs.js';
import { replicaNameOption } from './replicas.js';
import { followJob, JOB_OPTIONS, type JobProgress } from '../jobs/runner.js';
import { durationOption } from '../../shared/units.js';
import { progressBar } from './progress-bar.js';
import { verify, VERIFY_DEFAULTS, type VerifyOptions, type VerifySettings } from '../verify/verify.js';
import { verifyCluster } from '../cluster/verify.js';
import { openClusterPair, refuseCluster } from './cluster.js';
import { VERIFY_JOB } from '../verify/job.js';
import { formatResult, ReportFile, VERIFY_MODES, type VerifyResult } from '../verify/result.js';

interface VerifyFlags {
  master?: string;
  replica?: string;
  prefix: string;
  queue?: string;
  queueDb?: string;
  name?: string;
  logLevel: string;
  mode?: string;
  sample?: string;
  recent?: string;
  ttlToleranceMs?: string;
  drainTimeoutMs?: string;
  report?: string;
  json?: boolean;
  job?: boolean;
  every?: string;
}

function settings(o: VerifyFlags): VerifySettings {
  const mode = choiceOption(o.mode, '--mode', VERIFY_MODES, VERIFY_DEFAULTS.mode);
  if (o.sample !== undefined && mode !== 'sample') throw new ConfigError(`qsync: --sample goes with --mode sample, not --mode ${mode}`);
  if (o.recent !== undefined && mode !== 'recent') throw new ConfigError(`qsync: --recent goes with --mode recent, not --mode ${mode}`);
  const sample = o.sample === undefined ? VERIFY_DEFAULTS.sample : Number(o.sample);
  if (!(sample > 0 && sample <= 1)) throw new ConfigError(`qsync: --sample must be a fraction above 0 and at most 1, got '${o.sample}'`);
  return {
    mode,
    sample,
    recent: intOption(o.recent, '--recent', VERIFY_DEFAULTS.recent, 1, 1_000_000),
    ttlToleranceMs: durationOption(o.ttlToleranceMs, '--ttl-tolerance-ms', VERIFY_DEFAULTS.ttlToleranceMs, { max: 86_400_000 }),
    drainTimeoutMs: durationOption(o.drainTimeoutMs, '--drain-timeout-ms', VERIFY_DEFAULTS.drainTimeoutMs, { max: 3_600_000 }),
  };
}

function print(result: VerifyResult, json?: boolean, extra: Record<string, unknown> = {}): number {
  process.stdout.write(`${json ? JSON.stringify({ ...extra, ...result }, null, 2) : formatResult(result)}\n`);
  return result.differences + result.inFlight > 0 ? ExitCode.different : ExitCode.ok;
}

/** The report's summary; `truncated` when the report holds only the differences a job's result carries. */
function summary({ examples, ...rest }: VerifyResult, fromJob: boolean): Omit<VerifyResult, 'examples'> & { truncated: boolean } {
  return { ...rest, truncated: fromJob && examples.length < rest.differences + rest.inFlight };
}

async function direct(o: VerifyFlags, s: VerifySettings, report?: ReportFile): Promise<number> {
  const where = queuePlace(o);
  const [master, replica] = [sideOptions(o, 'master'), sideOptions(o, 'replica')];
  // A Redis Cluster on either side is walked shard by shard (cluster/verify.ts).
  const cluster = await openClusterPair(o);
  if (!cluster) (await openPair(o)).close();
  const bar = progressBar(!o.json && process.stdout.isTTY === true, 'verify');
  let result: VerifyResult;
  try {
    const run: Pick<VerifyOptions, 'onProgress' | 'onDifference' | 'onWaiting'> & VerifySettings & QueuePlace = {
      ...s,
      ...where,
      onProgress: (p) => bar.update(p.scanned, p.total, p.differences),
      onDifference: (d) => report?.add(d),
      onWaiting: (w) =>
        process.stderr.write(
          `qsync: ${w.keys} keys differ while entries touching them wait in the queue; waiting up to ${Math.ceil(w.timeoutMs / 1000)} s for the consumer to apply up to ${w.target} (replica at ${w.watermark})\n`,
        ),
    };
    result = await (cluster ? verifyCluster({ ...run, source: cluster.source, target: cluster.target }) : verify({ ...run, master, replica }));
  } catch (err) {
    if (err instanceof QsyncError || !isLinkError(err)) throw err;
    throw new UnreachableError(`qsync: verify lost a connection: ${describeError(err as Error)}`);
  } finally {
    bar.stop();
    cluster?.close();
  }
  report?.finish(summary(result, false));
  return print(result, o.json);
}

const NO_CLUSTER_JOBS = 'a consumer runs no control jobs on a cluster';

async function viaJob(o: VerifyFlags, s: VerifySettings, report?: ReportFile): Promise<number> {
  const where = queuePlace(o);
  await refuseCluster(o, 'verify --job', NO_CLUSTER_JOBS);
  const queue = await openQueue(o, where);
  const detach = new AbortController();
  const onSigint = () => detach.abort();
  process.once('SIGINT', onSigint);
  const bar = progressBar(!o.json && process.stdout.isTTY === true, 'verify (job)', 0);
  try {
    const job = await queue.add(VERIFY_JOB, s);
    process.stderr.write(
      `qsync: verify job ${job.id} queued in ${jobsPrefix(where.prefix)}:${where.queue}; a consumer of queue '${where.queue}' runs it (Ctrl-C detaches, the job goes on)\n`,
    );
    const followed = await followJob(
      queue,
      job.id!,
      (p) => {
        const { done, total, differences } = (p ?? {}) as Partial<JobProgress>;
        if (typeof done === 'number' && typeof total === 'number') bar.update(done, total, Number(differences ?? 0));
      },
      detach.signal,
    );
    bar.stop();
    if (followed.outcome === 'detached') {
      process.stderr.write(`qsync: detached; verify job ${job.id} goes on (qsync jobs lists it, qsync status shows its result)\n`);
      return ExitCode.ok;
    }
    if (followed.outcome === 'failed') {
      process.stderr.write(`qsync: verify job ${job.id} failed after ${followed.job.attemptsMade} attempts: ${followed.job.failedReason}\n`);
      return ExitCode.internal;
    }
    const result = followed.job.result as VerifyResult;
    if (report) {
      for (const d of result.examples) report.add(d);
      report.finish(summary(result, true));
    }
    return print(result, o.json, { job: job.id });
  } finally {
    bar.stop();
    process.off('SIGINT', onSigint);
    await queue.close();
  }
}

async function schedule(o: VerifyFlags, s: VerifySettings, every: string): Promise<number> {
  const everyMs = every === 'off' ? null : durationOption(every, "--every (or 'off')", 0, { min: 1000 });
  const where = queuePlace(o);
  await refuseCluster(o, 'verify --every', NO_CLUSTER_JOBS);
  const queue = await openQueue(o, where);
  try {
    if (everyMs === null) {
      const removed = await queue.removeJobScheduler(VERIFY_JOB);
      process.stdout.write(
        o.json
          ? `${JSON.stringify({ schedule: VERIFY_JOB, queue: where.queue, removed }, null, 2)}\n`
          : `${removed ? 'removed the periodic verification' : 'no periodic verification'} of queue '${where.queue}'\n`,
      );
    } else {
      await queue.upsertJobScheduler(VERIFY_JOB, { every: everyMs }, { name: VERIFY_JOB, data: s, opts: JOB_OPTIONS });
      process.stdout.write(
        o.json
          ? `${JSON.stringify({ schedule: VERIFY_JOB, queue: where.queue, everyMs, settings: s }, null, 2)}\n`
          : `verify (${s.mode}) of queue '${where.queue}' every ${every}, the first run now; qsync jobs lists the runs\n`,
      );
    }
    return ExitCode.ok;
  } finally {
    await queue.close();
  }
}

export function verifyCommand(program: Command): void {
  common(program.command('verify'))
    .description('compare the master and the replica key by key, both ways; exit 1 when they differ')
    .addOption(
      new Option('--replica <url>', "replica URL, redis://, rediss:// or redis+sentinel:// (with --job, the consumer's replica is used)").env(
        'QSYNC_REPLICA',
      ),
    )
    .addOption(queueOption())
    .addOption(replicaNameOption('the replica compared, among those the log feeds'))
    .addOption(
      new Option('--mode <mode>', 'full: every key; sample: a random fraction; recent: the keys of the newest entries in the log').default(
        VERIFY_DEFAULTS.mode,
      ),
    )
    .option('--sample <fraction>', `fraction of keys checked in sample mode (default ${VERIFY_DEFAULTS.sample})`)
    .option('--recent <n>', `entries whose keys recent mode checks (default ${VERIFY_DEFAULTS.recent})`)
    .option('--ttl-tolerance-ms <duration>', 'expiries this close count as equal (ms, or with a unit: 1s)', String(VERIFY_DEFAULTS.ttlToleranceMs))
    .option(
      '--drain-timeout-ms <duration>',
      'how long to wait for the consumer to apply queued entries that explain a difference',
      String(VERIFY_DEFAULTS.drainTimeoutMs),
    )
    .option('--report <file>', 'write every difference to this file as JSON')
    .option('--json', 'print the result as JSON')
    .option('--job', 'run as a control job in a qsync consume of the queue and follow it')
    .option('--every <duration>', "run as a control job every 30s, 15m, 1h, 1d...; 'off' removes the schedule")
    .action(async (o: VerifyFlags) => {
      const s = settings(o);
      if (o.every !== undefined) {
        if (o.report) throw new ConfigError('qsync: --report needs a run to follow; --every only schedules runs (qsync status shows their results)');
        setExitCode(await schedule(o, s, o.every));
        return;
      }
      const report = o.report ? new ReportFile(o.report) : undefined;
      setExitCode(o.job ? await viaJob(o, s, report) : await direct(o, s, report));
    });
}
