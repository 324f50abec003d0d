/**
 * The `verify` and `jobs` commands: compare the master and the replica, here
 * or as a control job run by a consumer (once, or on a schedule), and list
 * the control jobs.
 */
import { Option, type Command } from 'commander';
import type { Redis, RedisOptions } from 'ioredis';
import { choiceOption, intOption, nameOption } from '../shared/config.js';
import { ConfigError, ExitCode, QsyncError, UnreachableError } from '../shared/errors.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE } from '../shared/keys.js';
import { describeError, isLinkError } from './connections.js';
import { controlQueue, followJob, jobsPrefix, JOB_OPTIONS, type JobProgress } from './jobs.js';
import { formatJobs, listJobs, parseInterval } from './jobs-view.js';
import { progressBar } from './progress-bar.js';
import { verify, VERIFY_DEFAULTS, type VerifySettings } from './verify.js';
import { VERIFY_JOB } from './verify-job.js';
import { formatResult, ReportFile, VERIFY_MODES, type VerifyResult } from './verify-result.js';

export interface ControlFlags {
  master?: string;
  replica?: string;
  prefix: string;
  queue?: string;
  queueDb?: string;
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

/** What the rest of the CLI lends these commands. */
export interface Cli {
  /** adds the flags every command has: --master, --prefix, --queue-db, TLS, --log-level */
  common(cmd: Command): Command;
  /** connection options for --master or --replica, checked */
  sideOptions(o: ControlFlags, side: 'master' | 'replica'): RedisOptions;
  /** one checked connection in the queue db: fails with a clear exit code when unreachable, refused or misconfigured */
  open(o: ControlFlags, side: 'master' | 'replica'): Promise<Redis>;
  exit(code: number): void;
}

function settings(o: ControlFlags): VerifySettings {
  const mode = choiceOption(o.mode, '--mode', VERIFY_MODES, VERIFY_DEFAULTS.mode);
  if (o.sample !== undefined && mode !== 'sample') throw new ConfigError(`qsync: --sample goes with --mode sample, not --mode ${mode}`);
  if (o.recent !== undefined && mode !== 'recent') throw new ConfigError(`qsync: --recent goes with --mode recent, not --mode ${mode}`);
  const sample = o.sample === undefined ? VERIFY_DEFAULTS.sample : Number(o.sample);
  if (!(sample > 0 && sample <= 1)) throw new ConfigError(`qsync: --sample must be a fraction above 0 and at most 1, got '${o.sample}'`);
  return {
    mode,
    sample,
    recent: intOption(o.recent, '--recent', VERIFY_DEFAULTS.recent, 1, 1_000_000),
    ttlToleranceMs: intOption(o.ttlToleranceMs, '--ttl-tolerance-ms', VERIFY_DEFAULTS.ttlToleranceMs, 0, 86_400_000),
    drainTimeoutMs: intOption(o.drainTimeoutMs, '--drain-timeout-ms', VERIFY_DEFAULTS.drainTimeoutMs, 0, 3_600_000),
  };
}

function place(o: ControlFlags) {
  return {
    prefix: nameOption(o.prefix, '--prefix', DEFAULT_PREFIX),
    queue: nameOption(o.queue, '--queue', DEFAULT_QUEUE),
    queueDb: intOption(o.queueDb, '--queue-db', 0, 0, 10_000),
  };
}

function print(result: VerifyResult, json?: boolean, extra: Record<string, unknown> = {}): number {
  process.stdout.write((json ? JSON.stringify({ ...extra, ...result }, null, 2) : formatResult(result)) + '\n');
  return result.differences + result.inFlight > 0 ? ExitCode.different : ExitCode.ok;
}

/** The report's summary; `truncated` when the report holds only the differences a job's result carries. */
function summary({ examples, ...rest }: VerifyResult, fromJob: boolean): Omit<VerifyResult, 'examples'> & { truncated: boolean } {
  return { ...rest, truncated: fromJob && examples.length < rest.differences + rest.inFlight };
}

/** The control jobs' queue on a checked master. */
async function openQueue(o: ControlFlags, cli: Cli, where: ReturnType<typeof place>) {
  const master = cli.sideOptions(o, 'master');
  (await cli.open(o, 'master')).disconnect();
  return controlQueue({ master, ...where });
}

async function direct(o: ControlFlags, cli: Cli, s: VerifySettings, report?: ReportFile): Promise<number> {
  const where = place(o);
  const [master, replica] = [cli.sideOptions(o, 'master'), cli.sideOptions(o, 'replica')];
  for (const side of ['master', 'replica'] as const) (await cli.open(o, side)).disconnect();
  const bar = progressBar(!o.json && process.stdout.isTTY === true, 'verify');
  let result: VerifyResult;
  try {
    result = await verify({
      ...s,
      ...where,
      master,
      replica,
      onProgress: (p) => bar.update(p.scanned, p.total, p.differences),
      onDifference: (d) => report?.add(d),
      onWaiting: (w) =>
        process.stderr.write(
          `qsync: ${w.keys} keys differ while entries touching them wait in the queue; waiting up to ${Math.ceil(w.timeoutMs / 1000)} s for the consumer to apply up to ${w.target} (replica at ${w.watermark})\n`,
        ),
    });
  } catch (err) {
    if (err instanceof QsyncError || !isLinkError(err)) throw err;
    throw new UnreachableError(`qsync: verify lost a connection: ${describeError(err as Error)}`);
  } finally {
    bar.stop();
  }
  report?.finish(summary(result, false));
  return print(result, o.json);
}

async function viaJob(o: ControlFlags, cli: Cli, s: VerifySettings, report?: ReportFile): Promise<number> {
  const where = place(o);
  const queue = await openQueue(o, cli, where);
  const detach = new AbortController();
  const onSigint = () => detach.abort();
  process.once('SIGINT', onSigint);
  const bar = progressBar(!o.json && process.stdout.isTTY === true, 'verify (job)', 0);
  try {
    const job = await queue.add(VERIFY_JOB, s);
    process.stderr.write(`qsync: verify job ${job.id} queued in ${jobsPrefix(where.prefix)}:${where.queue}; a consumer of queue '${where.queue}' runs it (Ctrl-C detaches, the job goes on)\n`);
    const followed = await followJob(queue, job.id!, (p) => {
      const { done, total, differences } = (p ?? {}) as Partial<JobProgress>;
      if (typeof done === 'number' && typeof total === 'number') bar.update(done, total, Number(differences ?? 0));
    }, detach.signal);
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

async function schedule(o: ControlFlags, cli: Cli, s: VerifySettings, every: string): Promise<number> {
  const everyMs = every === 'off' ? null : parseInterval(every, "--every (or 'off')");
  const where = place(o);
  const queue = await openQueue(o, cli, where);
  try {
    if (everyMs === null) {
      const removed = await queue.removeJobScheduler(VERIFY_JOB);
      process.stdout.write(
        o.json
          ? JSON.stringify({ schedule: VERIFY_JOB, queue: where.queue, removed }, null, 2) + '\n'
          : `${removed ? 'removed the periodic verification' : 'no periodic verification'} of queue '${where.queue}'\n`,
      );
    } else {
      await queue.upsertJobScheduler(VERIFY_JOB, { every: everyMs }, { name: VERIFY_JOB, data: s, opts: JOB_OPTIONS });
      process.stdout.write(
        o.json
          ? JSON.stringify({ schedule: VERIFY_JOB, queue: where.queue, everyMs, settings: s }, null, 2) + '\n'
          : `verify (${s.mode}) of queue '${where.queue}' every ${every}, the first run now; qsync jobs lists the runs\n`,
      );
    }
    return ExitCode.ok;
  } finally {
    await queue.close();
  }
}

async function jobs(o: ControlFlags, cli: Cli): Promise<number> {
  const where = place(o);
  const queue = await openQueue(o, cli, where);
  try {
    const list = await listJobs(queue);
    process.stdout.write((o.json ? JSON.stringify(list, null, 2) : formatJobs(`${jobsPrefix(where.prefix)}:${where.queue}`, list)) + '\n');
    return ExitCode.ok;
  } finally {
    await queue.close();
  }
}

export function controlCommands(program: Command, cli: Cli): void {
  const queue = () => new Option('--queue <name>', 'queue').env('QSYNC_QUEUE').default(DEFAULT_QUEUE);

  cli
    .common(program.command('verify'))
    .description('compare the master and the replica key by key, both ways; exit 1 when they differ')
    .addOption(new Option('--replica <url>', 'replica URL, redis:// or rediss:// (with --job, the consumer\'s replica is used)').env('QSYNC_REPLICA'))
    .addOption(queue())
    .addOption(new Option('--mode <mode>', 'full: every key; sample: a random fraction; recent: the keys of the newest entries in the log').default(VERIFY_DEFAULTS.mode))
    .option('--sample <fraction>', `fraction of keys checked in sample mode (default ${VERIFY_DEFAULTS.sample})`)
    .option('--recent <n>', `entries whose keys recent mode checks (default ${VERIFY_DEFAULTS.recent})`)
    .option('--ttl-tolerance-ms <ms>', 'expiries this close count as equal', String(VERIFY_DEFAULTS.ttlToleranceMs))
    .option('--drain-timeout-ms <ms>', 'how long to wait for the consumer to apply queued entries that explain a difference', String(VERIFY_DEFAULTS.drainTimeoutMs))
    .option('--report <file>', 'write every difference to this file as JSON')
    .option('--json', 'print the result as JSON')
    .option('--job', 'run as a control job in a qsync consume of the queue and follow it')
    .option('--every <duration>', "run as a control job every 30s, 15m, 1h, 1d...; 'off' removes the schedule")
    .action(async (o: ControlFlags) => {
      const s = settings(o);
      if (o.every !== undefined) {
        if (o.report) throw new ConfigError('qsync: --report needs a run to follow; --every only schedules runs (qsync status shows their results)');
        cli.exit(await schedule(o, cli, s, o.every));
        return;
      }
      const report = o.report ? new ReportFile(o.report) : undefined;
      cli.exit(o.job ? await viaJob(o, cli, s, report) : await direct(o, cli, s, report));
    });

  cli
    .common(program.command('jobs'))
    .description('list the control jobs of a queue (state, progress, result) and their schedules')
    .addOption(queue())
    .option('--json', 'print JSON')
    .action(async (o: ControlFlags) => {
      cli.exit(await jobs(o, cli));
    });
}
