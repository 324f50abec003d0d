/**
 * Control jobs: work a consumer does for the operator (a verification, and
 * any type registered with `registerJobType`), queued in BullMQ on the
 * master under `<prefix>-jobs:<queue>:` in the queue's db.
 *
 * Every `qsync consume` runs a BullMQ worker next to its SyncWorker, with the
 * same master and replica. One job runs at a time per queue (BullMQ global
 * concurrency 1), on whichever consumer takes it, standby or not, unless its
 * type needs the lease. A job that fails is retried with backoff; a consumer
 * that stops puts its running job back in the queue for another one, without
 * counting an attempt.
 */
import {
  DelayedError,
  Queue,
  UnrecoverableError,
  WaitingError,
  Worker,
  type Job,
  type JobsOptions,
  type RedisOptions as BullRedisOptions,
} from 'bullmq';
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../../shared/logger.js';
import { DEFAULT_NAME, jobsPrefix } from '../../shared/keys.js';
import { sleep } from '../drain/backoff.js';
import type { SyncWorker } from '../drain/worker.js';

/** What a job's processor gets besides its data. */
export interface JobContext {
  master: RedisOptions;
  replica: RedisOptions;
  prefix: string;
  queue: string;
  queueDb: number;
  /** the replica the consumer feeds */
  name?: string;
  timeoutMs: number;
  log: Logger;
  /** the consumer's own worker, for jobs that must pause it (SyncWorker.runExclusive) */
  worker: SyncWorker;
  /** aborts when the consumer stops */
  signal: AbortSignal;
  jobId: string;
  /** reports progress: `{ done, total, ... }` shows as a percentage */
  progress(value: JobProgress): void;
}

export interface JobProgress {
  done: number;
  total: number;
  [extra: string]: unknown;
}

export interface JobType {
  /** does the work; its result (JSON) is kept with the job */
  run(data: Record<string, unknown>, ctx: JobContext): Promise<unknown>;
  /** a job's result in a few words, for `qsync jobs` */
  describe?(result: unknown): string;
  /** runs only on the consumer that holds the lease: a standby hands the job on without using an attempt */
  leaseHolderOnly?: boolean;
}

const types = new Map<string, JobType>();

/** Adds a job type that consumers run and `qsync jobs` shows. */
export function registerJobType(name: string, type: JobType): void {
  types.set(name, type);
}

/** A registered job type, by name. */
export function jobType(name: string): JobType | undefined {
  return types.get(name);
}

/** How long a stopping consumer waits for its job worker to put a running job back and close. */
const CLOSE_MS = 5000;

/** How long a job handed on by a standby waits before a consumer takes it again. */
const HAND_ON_MS = 1000;

/** Retries with backoff; finished jobs are kept for `qsync jobs`, the newest 100 of each outcome. */
export const JOB_OPTIONS: JobsOptions = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 10_000 },
  removeOnComplete: { count: 100 },
  removeOnFail: { count: 100 },
};

export interface JobsPlace {
  master: RedisOptions;
  queueDb: number;
  prefix: string;
  queue: string;
  /** the replica whose consumers run the jobs: each replica has its own control jobs. @default 'default' */
  name?: string;
}

/** The BullMQ queue of a replica's control jobs: the queue's name, and the replica's after '@' but for the default one. */
function jobsQueueName(p: JobsPlace): string {
  return !p.name || p.name === DEFAULT_NAME ? p.queue : `${p.queue}@${p.name}`;
}

/** BullMQ's connection: commands wait out a reconnection (BullMQ's workers block and expect that). */
function connection(p: JobsPlace): BullRedisOptions {
  return { ...p.master, retryStrategy: undefined, db: p.queueDb, maxRetriesPerRequest: null };
}

/** The BullMQ queue of a qsync queue's control jobs. Close it after use. */
export function controlQueue(p: JobsPlace): Queue {
  const queue = new Queue(jobsQueueName(p), { connection: connection(p), prefix: jobsPrefix(p.prefix), defaultJobOptions: JOB_OPTIONS });
  // Failures reach the calls that hit them.
  queue.on('error', () => {});
  return queue;
}

export interface JobRunnerOptions extends JobsPlace {
  replica: RedisOptions;
  timeoutMs: number;
  log: Logger;
  worker: SyncWorker;
  /** each progress report of the job running, and null when it ends (for the metrics) */
  onProgress?: (job: string, progress: JobProgress | null) => void;
}

/** Runs control jobs until closed. */
export function startJobWorker(o: JobRunnerOptions): { close(): Promise<void> } {
  const log = o.log.child({ jobs: `${jobsPrefix(o.prefix)}:${o.queue}` });
  let stopping = false;
  // Settles once BullMQ has recorded the outcome of the running job.
  let current: { recorded: Promise<void>; record(): void } | undefined;
  const processor = async (job: Job, token?: string, signal?: AbortSignal): Promise<unknown> => {
    let record!: () => void;
    current = { recorded: new Promise<void>((resolve) => (record = resolve)), record };
    const type = types.get(job.name);
    if (!type) throw new UnrecoverableError(`no job type '${job.name}' in this consumer (it runs ${[...types.keys()].join(', ')})`);
    if (type.leaseHolderOnly && o.worker.state === 'standby' && token) {
      await job.moveToDelayed(Date.now() + HAND_ON_MS, token).finally(record);
      throw new DelayedError();
    }
    log.info({ job: job.id, name: job.name, attempt: job.attemptsMade + 1 }, 'control job started');
    try {
      return await type.run(job.data as Record<string, unknown>, {
        ...o,
        log: log.child({ job: job.id }),
        signal: signal ?? new AbortController().signal,
        jobId: job.id!,
        progress: (value) => {
          o.onProgress?.(job.name, value);
          void job.updateProgress(value).catch(() => {});
        },
      });
    } catch (err) {
      if (stopping && token) {
        // Interrupted, not failed: back to the queue for the next consumer.
        await job.moveToWait(token).finally(record);
        throw new WaitingError();
      }
      throw err;
    } finally {
      // The job's progress ends with it (the metrics show no job running).
      o.onProgress?.(job.name, null);
    }
  };
  const worker = new Worker(jobsQueueName(o), processor, { connection: connection(o), prefix: jobsPrefix(o.prefix), concurrency: 1 });
  let lastError = '';
  worker.on('error', (err) => {
    // BullMQ retries by itself; a master that stays away would repeat the same error.
    if (err.message !== lastError) log.warn({ err: err.message }, 'control jobs: master error; retrying');
    lastError = err.message;
  });
  worker.on('completed', (job) => {
    current?.record();
    log.info({ job: job.id, name: job.name }, 'control job done');
  });
  worker.on('failed', (job, err) => {
    current?.record();
    log.warn({ job: job?.id, name: job?.name, attempt: job?.attemptsMade, err: err.message }, 'control job failed');
  });
  const queue = controlQueue(o);
  void queue
    .setGlobalConcurrency(1)
    .catch((err: Error) => log.warn({ err: err.message }, 'control jobs: could not limit to one job at a time'))
    .finally(() => void queue.close().catch(() => {}));
  return {
    close: async () => {
      stopping = true;
      worker.cancelAllJobs('consumer stopping');
      // A forced close does not wait for BullMQ's connections, which would
      // wait for a master that is away for as long as it is away. A job not
      // put back in time is found stalled later and run again by a consumer.
      const waited = new AbortController();
      await Promise.race([current?.recorded, sleep(CLOSE_MS, waited.signal)]);
      waited.abort();
      await worker.close(true).catch(() => {});
    },
  };
}

/** A control job as `qsync jobs` shows it. */
export interface JobView {
  id: string;
  type: string;
  state: string;
  progress: unknown;
  /** attempts started (a job put back by a stopping consumer starts again) */
  attemptsStarted: number;
  /** attempts that ended in failure or success */
  attemptsMade: number;
  attempts: number;
  createdAt: number;
  finishedAt: number | null;
  data: unknown;
  result: unknown;
  failedReason: string | null;
  /** the schedule that made it, for periodic jobs */
  schedule: string | null;
}

export function jobView(job: Job, state: string): JobView {
  return {
    id: job.id!,
    type: job.name,
    state,
    progress: job.progress,
    attemptsStarted: job.attemptsStarted,
    attemptsMade: job.attemptsMade,
    attempts: job.opts.attempts ?? 1,
    createdAt: job.timestamp,
    finishedAt: job.finishedOn ?? null,
    data: job.data,
    result: job.returnvalue ?? null,
    failedReason: job.failedReason || null,
    schedule: job.repeatJobKey ?? null,
  };
}

export type Followed = { outcome: 'completed' | 'failed'; job: JobView } | { outcome: 'detached'; job: JobView | null };

/**
 * Follows a job until it completes or fails for good (retries included),
 * reporting its progress; resolves 'detached' when the signal aborts (the job
 * goes on).
 */
export async function followJob(queue: Queue, id: string, onProgress: (p: unknown) => void, signal: AbortSignal): Promise<Followed> {
  let view: JobView | null = null;
  while (!signal.aborted) {
    // The state first, then the job: a job read before it finished but found
    // finished by a later state read would lack its result.
    const state = await queue.getJobState(id);
    const job = await queue.getJob(id);
    if (!job || state === 'unknown') throw new Error(`control job ${id} is gone (removed by hand?)`);
    view = jobView(job, state);
    if (view.state === 'completed' || view.state === 'failed') return { outcome: view.state, job: view };
    onProgress(view.progress);
    await sleep(250, signal);
  }
  return { outcome: 'detached', job: view };
}
